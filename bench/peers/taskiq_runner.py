"""taskiq as a :class:`~bench.driver.Target`: 2 worker processes (``taskiq worker``),
each with 32 messages prefetched and at most 32 tasks at once.

``kiq()`` awaits its publisher confirm on one aio-pika channel; many run at once, so the
producer keeps ``in_flight`` confirms outstanding, like SAS Fleet's client. Three-step
jobs are skipped: taskiq has no chain primitive (that is the separate taskiq-pipelines).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from taskiq import AsyncBroker
from taskiq.exceptions import ResultGetError

from bench.cleanup import clean_run
from bench.model import RunSpec
from bench.peers.env import PeerEnv, payload
from bench.peers.taskiq_app import PREFETCH, TASK, make_broker
from bench.peers.watch import Watcher, parse_done
from bench.peers.workers import PeerWorkers
from bench.procs import spawn
from bench.rabbit import wait_for_consumers
from bench.tracker import Tracker

PROCESSES = 2


class TaskiqTarget(PeerWorkers):
    """Producer, workers and result store of one taskiq run."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__()
        if spec.steps != 1:
            raise ValueError("taskiq has no chain primitive: multi-step jobs are skipped")
        self.spec = spec
        self.env = PeerEnv.of(spec)
        self.width = spec.in_flight
        self.broker: AsyncBroker = make_broker(self.env, announce=False)
        self.task = self.broker.find_task(TASK)
        self.expected: dict[str, int] = {}
        self.started = False

    async def open(self, tracker: Tracker) -> None:
        self.watcher = Watcher(self.spec.redis_url, tracker, parse_done)
        await self.watcher.start(channel=self.env.done_channel)
        await self.broker.startup()
        self.started = True

    def start_workers(self) -> None:
        cmd = [
            sys.executable, "-m", "taskiq", "worker", "bench.peers.taskiq_app:broker",
            "--workers", str(PROCESSES), "--ack-type", "when_saved",
            "--max-async-tasks", str(PREFETCH), "--log-level", "WARNING",
        ]  # fmt: skip
        self.workers.append(
            spawn("taskiq-worker", cmd, self.env.environ(), Path(self.spec.workdir))
        )

    async def ready(self) -> None:
        await wait_for_consumers(self.spec.amqp_url, self.env.queue, PROCESSES, self.workers)

    async def submit(self, n: int, steps: int) -> str:
        assert self.task is not None
        sent = await self.task.kiq(payload(n))
        self.expected[sent.task_id] = n
        return sent.task_id

    async def _one_ok(self, handle: str) -> bool:
        try:
            result = await self.broker.result_backend.get_result(handle)
        except ResultGetError:
            return False
        value: Any = result.return_value
        return (
            not result.is_err
            and isinstance(value, dict)
            and value.get("n") == self.expected[handle]
        )

    async def verify(self, handles: list[str]) -> int:
        ok = 0
        for i in range(0, len(handles), 200):
            ok += sum(await asyncio.gather(*(self._one_ok(h) for h in handles[i : i + 200])))
        return ok

    async def close(self) -> None:
        await self.stop_workers()
        if self.started:
            await self.broker.shutdown()
        await clean_run(self.spec)
