"""The agent's heartbeat: its liveness record, and the lease renewal of running steps."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from sasfleet.agent.runner import Runner
from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.views import AgentView

log = logging.getLogger(__name__)


class Heartbeat:
    """Beats every ``interval_s``: one agent record write, one lease renewal per step."""

    def __init__(
        self, runner: Runner, agents: AgentRegistry, pool: str, concurrency: int, interval_s: float
    ) -> None:
        self.runner = runner
        self.agents = agents
        self.pool = pool
        self.concurrency = concurrency
        self.interval_s = interval_s
        self.started_at = runner.store.clock.now_ms()
        self.host = socket.gethostname()

    def view(self) -> AgentView:
        return AgentView(
            agent_id=self.runner.agent_id,
            pool=self.pool,
            host=self.host,
            pid=os.getpid(),
            concurrency=self.concurrency,
            started_at=self.started_at,
            last_beat=self.runner.store.clock.now_ms(),
            running=[f"{job}|{step}" for job, step in self.runner.running],
            tasks=sorted(self.runner.registry.tasks),
        )

    async def beat(self) -> bool:
        await self.agents.beat(self.view(), ttl_s=max(int(self.interval_s * 3) + 1, 5))
        running = list(self.runner.running.values())
        store, lease_ms = self.runner.store, self.runner.lease_ms
        renewed = await asyncio.gather(
            *(
                store.renew(r.dispatch.job_id, r.dispatch.step, r.dispatch.lease, lease_ms)
                for r in running
            ),
            return_exceptions=True,
        )
        for r, ok in zip(running, renewed, strict=True):
            if ok is False:
                log.warning(
                    "lease %d of %s step %d was taken over",
                    r.dispatch.lease,
                    r.dispatch.job_id,
                    r.dispatch.step,
                    extra={"job_id": r.dispatch.job_id, "step": r.dispatch.step},
                )
            elif isinstance(ok, BaseException):
                log.warning("lease renewal failed: %s", ok)
        return False
