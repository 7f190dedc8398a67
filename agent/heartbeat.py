"""The agent's heartbeat: its liveness record, and the lease renewal of running steps."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import socket
import time

from sasfleet.agent.runner import Runner, RunningStep
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.store import CANCEL_REQUESTED, LEASE_LOST, StateStore
from sasfleet.shared.state.views import AgentView

log = logging.getLogger(__name__)

RECORD_TTL_S = 300
VERSION = importlib.metadata.version("sasfleet")


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
            version=VERSION,
        )

    async def beat(self) -> bool:
        # The record outlives missed beats: supervisors judge liveness by last_beat.
        await self.agents.beat(self.view(), ttl_s=RECORD_TTL_S)
        running = list(self.runner.running.values())
        store, lease_ms = self.runner.store, self.runner.lease_ms
        now = time.monotonic()
        renewals = await asyncio.gather(
            *(self._renew(store, r, lease_ms, now) for r in running), return_exceptions=True
        )
        for outcome in renewals:
            if isinstance(outcome, BaseException):
                log.warning("lease renewal failed: %s", outcome)
        return False

    async def _renew(self, store: StateStore, r: RunningStep, lease_ms: int, now: float) -> None:
        d = r.dispatch
        silent_s = now - r.context.last_heartbeat
        if d.heartbeat_timeout_ms and silent_s * 1000 > d.heartbeat_timeout_ms:
            log.warning(
                "%s step %d: no heartbeat from its handler for %.1fs; stopping it",
                d.job_id,
                d.step,
                silent_s,
                extra={"job_id": d.job_id, "step": d.step},
            )
            r.stop(
                ErrorInfo(
                    type="HeartbeatTimeout",
                    message=f"handler silent for "
                    f"{silent_s:.1f}s (heartbeat timeout {d.heartbeat_timeout_ms} ms)",
                )
            )
            return
        progress, r.context.progress = r.context.progress, b""
        answer = await store.renew(d.job_id, d.step, d.lease, lease_ms, progress)
        if answer == LEASE_LOST and r.finishing:
            # The step's own outcome was just recorded (so it is no longer running): let the
            # runner finish announcing it instead of cancelling it half-way.
            return
        if answer == LEASE_LOST:
            log.warning(
                "lease %d of %s step %d was taken over; dropping the step",
                d.lease,
                d.job_id,
                d.step,
                extra={"job_id": d.job_id, "step": d.step},
            )
            r.stop(None)
        elif answer == CANCEL_REQUESTED and not r.context.cancel_requested:
            log.info(
                "%s was cancelled; stopping step %d",
                d.job_id,
                d.step,
                extra={"job_id": d.job_id, "step": d.step},
            )
            r.stop(
                ErrorInfo(
                    type="Cancelled",
                    message="the job was cancelled while the step ran",
                    retryable=False,
                )
            )
