"""The Celery app of a run: the worker's (``python -m celery -A bench.peers.celery_app
worker``, configured from the environment) and the producer's (:func:`make_app`).

Durability: persistent messages (Celery's default delivery mode), publisher confirms
(``confirm_publish``), a quorum (or classic) durable queue, ``acks_late`` (the prefork
parent acks once the child stored the result) and results in Redis. Remote control,
events, gossip, mingle and heartbeats are off: they add broker traffic and queues that
have nothing to do with running jobs.
"""

from __future__ import annotations

from typing import Any

from celery import Celery  # type: ignore[import-untyped]
from celery.worker.consumer import Consumer  # type: ignore[import-untyped]
from kombu.entity import Exchange, Queue

from bench.peers.env import PeerEnv

TASK = "bench.echo"


class BenchConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer without native delayed delivery: on quorum queues Celery would
    declare 28 un-prefixed ``celery_delayed_*`` exchanges and queues in the shared broker,
    for countdown/ETA tasks this benchmark never sends."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = [s for s in Consumer.Blueprint.default_steps if "delayed_delivery" not in s]


def make_app(env: PeerEnv, *, results: bool, pool_limit: int = 16) -> Celery:
    """The run's app. The producer's has no result backend (``results=False``): with one,
    every ``apply_async`` SUBSCRIBEs to the task's result channel from the calling thread;
    the producer learns completions from one pattern subscription instead
    (:mod:`bench.peers.watch`)."""
    app = Celery("bench", broker=env.amqp_url, backend=env.redis_url if results else None)
    arguments = {"x-queue-type": env.queue_type}
    app.conf.update(
        task_queues=[
            Queue(  # type: ignore[no-untyped-call]
                env.queue,
                Exchange(env.queue, type="direct", durable=True),  # type: ignore[no-untyped-call]
                routing_key=env.queue,
                durable=True,
                queue_arguments=arguments,
            )
        ],
        task_default_queue=env.queue,
        task_default_exchange=env.queue,
        task_default_routing_key=env.queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_transport_options={"confirm_publish": True},
        broker_pool_limit=pool_limit,
        broker_connection_retry_on_startup=True,
        result_backend_transport_options={"global_keyprefix": env.key_prefix},
        result_expires=3600,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_consumer=f"{__name__}:BenchConsumer",
    )

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def echo(payload: Any) -> Any:
        return payload

    return app


def result_channel_pattern(env: PeerEnv) -> str:
    """Celery's Redis backend publishes each stored result on its key's channel."""
    return f"{env.key_prefix}celery-task-meta-*"


app: Celery  # the worker's, made by __getattr__ on first use


def __getattr__(name: str) -> Celery:
    # `celery -A bench.peers.celery_app` looks up `app`: built on first use, from the
    # environment, so importing this module for make_app() builds nothing.
    if name == "app":
        global app
        app = make_app(PeerEnv.from_environ(), results=True)
        return app
    raise AttributeError(name)
