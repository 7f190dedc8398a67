"""Dramatiq as a :class:`~bench.driver.Target`: 2 worker processes x 8 threads.

pika's BlockingConnection waits for each publisher confirm before ``send`` returns; the
broker keeps one connection per thread, so the producer pipelines with threads: ``width``
threads, one confirm in flight each. Three-step jobs are ``dramatiq.pipeline``s.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.results import ResultMissing

from bench.cleanup import clean_run
from bench.model import RunSpec
from bench.peers.dramatiq_app import ACTOR, make_broker
from bench.peers.env import PeerEnv, payload
from bench.peers.watch import Watcher, parse_done
from bench.peers.workers import PeerWorkers
from bench.procs import spawn
from bench.rabbit import wait_for_consumers
from bench.tracker import Tracker

PROCESSES = 2
THREADS = 8


class DramatiqTarget(PeerWorkers):
    """Producer, workers and result store of one Dramatiq run."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__()
        self.spec = spec
        self.env = PeerEnv.of(spec)
        self.width = spec.producer_threads
        self.broker, self.backend = make_broker(self.env, announce=False)
        self.actor: dramatiq.Actor[..., Any] = self.broker.get_actor(ACTOR)
        self.threads = ThreadPoolExecutor(self.width, thread_name_prefix="dramatiq-submit")
        self.last: dict[str, tuple[dramatiq.Message[Any], int]] = {}  # handle -> (msg, n)

    async def open(self, tracker: Tracker) -> None:
        self.watcher = Watcher(self.spec.redis_url, tracker, parse_done)
        await self.watcher.start(channel=self.env.done_channel)
        await asyncio.get_running_loop().run_in_executor(
            self.threads, lambda: self.broker.declare_queue(self.env.queue, ensure=True)
        )

    def start_workers(self) -> None:
        cmd = [
            sys.executable, "-m", "dramatiq", "bench.peers.dramatiq_app:setup",
            "--processes", str(PROCESSES), "--threads", str(THREADS),
            "--queues", self.env.queue,
        ]  # fmt: skip
        self.workers.append(
            spawn("dramatiq-worker", cmd, self.env.environ(), Path(self.spec.workdir))
        )

    async def ready(self) -> None:
        await wait_for_consumers(self.spec.amqp_url, self.env.queue, PROCESSES, self.workers)

    def _send(self, n: int, steps: int) -> tuple[str, dramatiq.Message[Any]]:
        if steps == 1:
            message = self.actor.send(payload(n))
            return message.message_id, message
        # A pipeline: each step gets the previous result; the first carries the payload.
        messages = [self.actor.message(payload(n))]
        messages += [self.actor.message() for _ in range(steps - 1)]
        dramatiq.pipeline(messages, broker=self.broker).run()  # type: ignore[no-untyped-call]
        return messages[-1].message_id, messages[-1]

    async def submit(self, n: int, steps: int) -> str:
        handle, message = await asyncio.get_running_loop().run_in_executor(
            self.threads, self._send, n, steps
        )
        self.last[handle] = (message, n)
        return handle

    def _verify(self, handles: list[str]) -> int:
        ok = 0
        for h in handles:
            message, n = self.last[h]
            try:
                result = self.backend.get_result(message)
            except ResultMissing:
                continue
            ok += isinstance(result, dict) and result.get("n") == n
        return ok

    async def verify(self, handles: list[str]) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.threads, self._verify, handles)

    async def close(self) -> None:
        await self.stop_workers()
        self.threads.shutdown(wait=True)
        self.broker.close()
        await clean_run(self.spec)
