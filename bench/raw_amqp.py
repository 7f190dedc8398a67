"""The physical limit of the path: a durable request/reply round trip in plain aio-pika.

Producer -> persistent message, publisher confirm -> durable request queue -> consumer
publishes a persistent reply (confirmed) to a durable reply queue, then acks the request
-> the producer consumes the reply (and acks it). No state store, no scheduling: what is
left when a job system does nothing but move a job there and its answer back.

``python -m bench.raw_amqp`` is the consumer process (configured from the environment).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.cleanup import clean_run
from bench.model import RunSpec
from bench.peers.env import PeerEnv, payload
from bench.procs import Worker, spawn, stop_all, tree
from bench.rabbit import wait_for_consumers
from bench.tracker import Tracker

PROCESSES = 2
PREFETCH = 32  # unacked requests per consumer process, as SAS Fleet's agent concurrency


def reply_queue(env: PeerEnv) -> str:
    return f"{env.prefix}.replies"


async def declare(channel: aio_pika.abc.AbstractChannel, env: PeerEnv) -> None:
    arguments: dict[str, Any] = {"x-queue-type": env.queue_type}
    await channel.declare_queue(env.queue, durable=True, arguments=arguments)
    await channel.declare_queue(reply_queue(env), durable=True, arguments=arguments)


async def consume(env: PeerEnv) -> None:
    """The consumer: reply (persistent, confirmed), then ack; until SIGTERM."""
    connection = await aio_pika.connect_robust(env.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    await declare(channel, env)
    queue = await channel.get_queue(env.queue)

    async def on_request(message: AbstractIncomingMessage) -> None:
        reply = aio_pika.Message(
            message.body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
        )
        await channel.default_exchange.publish(reply, routing_key=message.reply_to or "")
        await message.ack()

    await queue.consume(on_request)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await connection.close()


class RawTarget:
    """The raw round trip as a :class:`~bench.driver.Target`."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.env = PeerEnv.of(spec)
        self.width = spec.in_flight
        self.workers: list[Worker] = []
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.ok: set[str] = set()

    async def open(self, tracker: Tracker) -> None:
        self.connection = await aio_pika.connect_robust(self.spec.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=1000)
        await declare(self.channel, self.env)
        replies = await self.channel.get_queue(reply_queue(self.env))

        async def on_reply(message: AbstractIncomingMessage) -> None:
            handle = message.correlation_id or ""
            tracker.finish(handle)
            if json.loads(message.body).get("n") == int(handle.partition(":")[0]):
                self.ok.add(handle)
            await message.ack()

        await replies.consume(on_reply)

    def start_workers(self) -> None:
        cmd = [sys.executable, "-m", "bench.raw_amqp"]
        for i in range(PROCESSES):
            self.workers.append(
                spawn(f"raw-consumer-{i}", cmd, self.env.environ(), Path(self.spec.workdir))
            )

    async def ready(self) -> None:
        await wait_for_consumers(self.spec.amqp_url, self.env.queue, PROCESSES, self.workers)

    async def submit(self, n: int, steps: int) -> str:
        assert self.channel is not None
        handle = f"{n}:{uuid.uuid4().hex[:8]}"
        message = aio_pika.Message(
            json.dumps(payload(n)).encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=handle,
            reply_to=reply_queue(self.env),
            content_type="application/json",
        )
        await self.channel.default_exchange.publish(message, routing_key=self.env.queue)
        return handle

    async def verify(self, handles: list[str]) -> int:
        return sum(h in self.ok for h in handles)

    def process_groups(self) -> dict[str, list[int]]:
        return {"consumer": [p for w in self.workers for p in tree(w.pid)]}

    async def close(self) -> None:
        await asyncio.to_thread(stop_all, self.workers)
        if self.connection is not None:
            await self.connection.close()
        await clean_run(self.spec)


if __name__ == "__main__":
    if os.environ.get("BENCH_PREFIX") is None:
        sys.exit("python -m bench.raw_amqp is started by python -m bench.compare")
    asyncio.run(consume(PeerEnv.from_environ()))
