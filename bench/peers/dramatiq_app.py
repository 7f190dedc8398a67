"""The Dramatiq broker and actor of a run: the worker's (``python -m dramatiq
bench.peers.dramatiq_app:setup``, configured from the environment) and the producer's
(:func:`make_broker`).

Durability: persistent messages (Dramatiq's default), publisher confirms
(``confirm_delivery=True``), quorum (or classic) durable queues, acks after the actor ran
and every ``after_process_message`` hook (so after the result is stored), results in Redis.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.peers.env import PeerEnv

ACTOR = "bench_echo"


class BenchRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's broker with the queue type of the run (Dramatiq declares classic)."""

    queue_type = "quorum"

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        arguments["x-queue-type"] = self.queue_type
        return arguments


class AnnounceDone(Middleware):
    """Publishes ``"<message id> ok|error"`` once the Results middleware (earlier in the
    list) stored the outcome; the ack follows all ``after_process_message`` hooks."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.channel = channel

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        status = "ok" if exception is None else "error"
        self.redis.publish(self.channel, f"{message.message_id} {status}")


def echo(payload: Any) -> Any:
    """Returns its payload (in a pipeline: the previous step's result)."""
    return payload


def make_broker(env: PeerEnv, *, announce: bool) -> tuple[BenchRabbitmqBroker, RedisBackend]:
    """The run's broker with its result backend and the echo actor declared on it."""
    backend = RedisBackend(url=env.redis_url, namespace=env.prefix, use_namespace_prefix_keys=True)
    broker = BenchRabbitmqBroker(url=env.amqp_url, confirm_delivery=True)
    broker.queue_type = env.queue_type
    broker.add_middleware(Results(backend=backend, store_results=True))  # type: ignore[no-untyped-call]
    if announce:
        broker.add_middleware(AnnounceDone(env.redis_url, env.done_channel))
    dramatiq.actor(broker=broker, actor_name=ACTOR, queue_name=env.queue, max_retries=3)(echo)
    return broker, backend


def setup() -> None:
    """The worker's entry point: the broker of the run in the environment, made global."""
    broker, _ = make_broker(PeerEnv.from_environ(), announce=True)
    dramatiq.set_broker(broker)
