"""The taskiq broker of a run: the worker's (``python -m taskiq worker
bench.peers.taskiq_app:broker``, configured from the environment) and the producer's
(:func:`make_broker`).

Durability: persistent messages (taskiq-aio-pika's default), publisher confirms (aio-pika
channels confirm by default), quorum (or classic) durable queues, acks once the result is
saved (``--ack-type when_saved``, the default), results in Redis (JSON).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.serializers import JSONSerializer
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType
from taskiq_redis import RedisAsyncResultBackend

from bench.peers.env import PeerEnv

TASK = "bench.echo"
PREFETCH = 32  # unacked messages per worker process, as SAS Fleet's agent concurrency


class AnnounceDone(TaskiqMiddleware):
    """Publishes ``"<task id> ok|error"`` from ``post_save``: taskiq calls it once the
    result backend stored the result, before the ack."""

    def __init__(self, redis_url: str, channel: str) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.channel = channel
        self.redis: aioredis.Redis | None = None

    async def startup(self) -> None:
        self.redis = aioredis.Redis.from_url(self.redis_url)

    async def shutdown(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if self.redis is not None:
            status = "error" if result.is_err else "ok"
            await self.redis.publish(self.channel, f"{message.task_id} {status}")


async def echo(payload: Any) -> Any:
    """Returns its payload."""
    return payload


def make_broker(env: PeerEnv, *, announce: bool) -> AsyncBroker:
    """The run's broker, result backend and echo task."""
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(
        env.redis_url, prefix_str=env.prefix, serializer=JSONSerializer(), result_ex_time=3600
    )
    broker = AioPikaBroker(
        url=env.amqp_url,
        qos=PREFETCH,
        exchange=Exchange(name=env.prefix),
        task_queues=[Queue(name=env.queue, type=QueueType(env.queue_type))],
        dead_letter_queue=Queue(name=f"{env.prefix}.dead", type=QueueType(env.queue_type)),
    ).with_result_backend(backend)
    if announce:
        broker.add_middlewares(AnnounceDone(env.redis_url, env.done_channel))
    broker.register_task(echo, task_name=TASK)
    return broker


broker: AsyncBroker  # the worker's, made by __getattr__ on first use


def __getattr__(name: str) -> AsyncBroker:
    # `taskiq worker bench.peers.taskiq_app:broker` looks up `broker`: built on first use,
    # from the environment, so importing this module for make_broker() builds nothing.
    if name == "broker":
        global broker
        broker = make_broker(PeerEnv.from_environ(), announce=True)
        return broker
    raise AttributeError(name)
