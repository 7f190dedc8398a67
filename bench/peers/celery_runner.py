"""Celery as a :class:`~bench.driver.Target`: prefork 2 with ``acks_late`` (or the
threads pool, 8 threads).

py-amqp waits for each publisher confirm before ``apply_async`` returns, so the producer
pipelines with threads: ``width`` threads, one confirm in flight each.
"""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celery import chain  # type: ignore[import-untyped]

from bench.cleanup import clean_run
from bench.model import RunSpec
from bench.peers.celery_app import TASK, make_app, result_channel_pattern
from bench.peers.env import PeerEnv, payload
from bench.peers.watch import Watcher
from bench.peers.workers import PeerWorkers
from bench.procs import spawn
from bench.rabbit import wait_for_consumers
from bench.tracker import Tracker


def parse_result(channel: bytes, data: bytes) -> tuple[str, bool] | None:
    """A stored result as Celery's Redis backend publishes it."""
    meta = json.loads(data)
    if meta.get("status") not in ("SUCCESS", "FAILURE"):
        return None  # STARTED and the like are not an end
    task_id = channel.decode().rpartition("celery-task-meta-")[2]
    return task_id, meta["status"] == "SUCCESS"


class CeleryTarget(PeerWorkers):
    """Producer, worker and result store of one Celery run."""

    def __init__(self, spec: RunSpec, pool: str) -> None:
        super().__init__()
        self.spec = spec
        self.env = PeerEnv.of(spec)
        self.pool = pool
        self.width = spec.producer_threads
        self.app = make_app(self.env, results=False, pool_limit=self.width)
        self.echo = self.app.tasks[TASK]
        self.threads = ThreadPoolExecutor(self.width, thread_name_prefix="celery-submit")
        self.expected: dict[str, int] = {}  # handle -> job number

    async def open(self, tracker: Tracker) -> None:
        self.watcher = Watcher(self.spec.redis_url, tracker, parse_result)
        await self.watcher.start(pattern=result_channel_pattern(self.env))
        await asyncio.get_running_loop().run_in_executor(self.threads, self._declare)

    def _declare(self) -> None:
        with self.app.connection_for_write() as connection:
            self.app.amqp.queues[self.env.queue].bind(connection).declare()

    def start_workers(self) -> None:
        options = (
            ["--pool", "prefork", "--concurrency", "2"]
            if self.pool == "prefork"
            else ["--pool", "threads", "--concurrency", "8"]
        )
        cmd = [
            sys.executable, "-m", "celery", "-A", "bench.peers.celery_app", "worker",
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-Q", self.env.queue, *options,
        ]  # fmt: skip
        self.workers.append(
            spawn("celery-worker", cmd, self.env.environ(), Path(self.spec.workdir))
        )

    async def ready(self) -> None:
        await wait_for_consumers(self.spec.amqp_url, self.env.queue, 1, self.workers)

    def _send(self, n: int, steps: int) -> str:
        if steps == 1:
            return str(self.echo.apply_async((payload(n),)).id)
        # A chain: each step gets the previous result; the first carries the payload.
        signatures = [self.echo.s(payload(n))] + [self.echo.s() for _ in range(steps - 1)]
        return str(chain(*signatures).apply_async().id)

    async def submit(self, n: int, steps: int) -> str:
        handle = await asyncio.get_running_loop().run_in_executor(
            self.threads, self._send, n, steps
        )
        self.expected[handle] = n
        return handle

    async def verify(self, handles: list[str]) -> int:
        assert self.watcher is not None
        ok = 0
        for i in range(0, len(handles), 500):
            batch = handles[i : i + 500]
            keys = [f"{self.env.key_prefix}celery-task-meta-{h}" for h in batch]
            for h, raw in zip(batch, await self.watcher.redis.mget(keys), strict=True):
                ok += raw is not None and _succeeded(json.loads(raw), self.expected[h])
        return ok

    async def close(self) -> None:
        await self.stop_workers()
        self.threads.shutdown(wait=True)
        self.app.close()
        await clean_run(self.spec)


def _succeeded(meta: dict[str, Any], n: int) -> bool:
    result = meta.get("result")
    return meta.get("status") == "SUCCESS" and isinstance(result, dict) and result.get("n") == n
