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
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.state.views import AgentView
from sasfleet.shared.statemachine import Failure

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
        store, now = self.runner.store, time.monotonic()
        renewals = await asyncio.gather(
            *(self._renew(store, r, now) for r in running), return_exceptions=True
        )
        for outcome in renewals:
            if isinstance(outcome, BaseException):
                log.warning("lease renewal failed: %s", outcome)
        return False

    async def _renew(self, store: StateStore, r: RunningStep, now: float) -> None:
        d = r.dispatch
        silent_s = now - r.context.last_heartbeat
        if d.heartbeat_timeout_s and silent_s > d.heartbeat_timeout_s:
            log.warning(
                "%s step %d: no heartbeat from its handler for %.1fs; stopping it",
                d.job_id,
                d.step,
                silent_s,
                extra={"job_id": d.job_id, "step": d.step},
            )
            limit = d.heartbeat_timeout_s
            message = f"handler silent for {silent_s:.1f}s (heartbeat timeout {limit:g} s)"
            r.stop(ErrorInfo(type=Failure.HEARTBEAT_TIMEOUT, message=message))
            return
        progress, r.context.progress = r.context.progress, b""
        answer = await store.renew(d.job_id, d.step, d.lease, progress)
        if answer == "lost" and r.finishing:
            # The step's own outcome was just recorded (so it is no longer running): let the
            # runner finish announcing it instead of cancelling it half-way.
            return
        if answer == "lost":
            log.warning(
                "lease %d of %s step %d was taken over; dropping the step",
                d.lease,
                d.job_id,
                d.step,
                extra={"job_id": d.job_id, "step": d.step},
            )
            r.stop(None)
        elif answer == "cancel_requested" and not r.context.cancel_requested:
            log.info(
                "%s was cancelled; stopping step %d",
                d.job_id,
                d.step,
                extra={"job_id": d.job_id, "step": d.step},
            )
            message = "the job was cancelled while the step ran"
            r.stop(ErrorInfo(type=Failure.CANCELLED, message=message, retryable=False))
