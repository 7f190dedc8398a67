"""A service's AMQP side: one robust connection, a confirming channel, the declared
topology, and the few kinds of message the fleet publishes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from sasfleet.shared.amqp.connection import connect
from sasfleet.shared.amqp.consumer import Consumer, Delivery, Handler
from sasfleet.shared.amqp.publisher import Publisher
from sasfleet.shared.amqp.topology import Names, Topology
from sasfleet.shared.errors import PublishFailed
from sasfleet.shared.messages.codec import encode, retry_decoder
from sasfleet.shared.messages.dispatch import StepDispatch
from sasfleet.shared.messages.events import JobFinished, StepRecorded
from sasfleet.shared.state.records import DispatchOrder

TRACEPARENT = "traceparent"


class FleetChannel:
    """Everything a service publishes or consumes goes through here."""

    def __init__(self, url: str, prefix: str, by: str, heartbeat_s: int = 10) -> None:
        self.url = url
        self.names = Names(prefix)
        self.by = by
        self.heartbeat_s = heartbeat_s
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.topology: Topology | None = None
        self.publisher: Publisher | None = None

    async def open(self, prefetch: int) -> None:
        self.connection = await connect(self.url, self.by, self.heartbeat_s)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.channel.set_qos(prefetch_count=prefetch)
        self.topology = Topology(self.channel, self.names)
        exchange = await self.topology.declare()
        self.publisher = Publisher(self.channel, exchange, app_id=self.by)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    def _ready(self) -> tuple[Topology, Publisher]:
        if self.topology is None or self.publisher is None:
            raise RuntimeError("FleetChannel.open() was not called")
        return self.topology, self.publisher

    async def queue(self, name: str) -> AbstractQueue:
        return await self._ready()[0].queue(name)

    async def consumer(self, queue_name: str, handler: Handler) -> Consumer:
        """A started consumer of ``queue_name`` that settles messages from ``handler``."""
        topology, publisher = self._ready()
        consumer = Consumer(
            await topology.queue(queue_name), handler, publisher, self.names, self.by
        )
        await consumer.start()
        return consumer

    async def reply_queue(self, on_reply: Callable[[Delivery], Awaitable[None]]) -> str:
        """A private, server-named queue for this process's replies; returns its name.

        Replies are hints (the state is in Redis), so they are consumed without acks.
        """
        assert self.channel is not None, "FleetChannel.open() was not called"
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_reply(Delivery.of(message))

        await queue.consume(deliver, no_ack=True)
        return queue.name

    async def dispatch(self, order: DispatchOrder, traceparent: str = "") -> None:
        """Publish one attempt of a step to its pool's queue (declared on first use)."""
        topology, publisher = self._ready()
        queue = self.names.pool(order.pool, order.priority)
        await topology.queue(queue)
        message = StepDispatch(
            job_id=order.job_id,
            step=order.step,
            task=order.task,
            attempt=order.attempt,
            lease=order.lease,
            idempotency_key=f"{order.job_id}:{order.step}",
            timeout_ms=order.timeout_ms,
            payload=msgspec.Raw(order.payload),
            compensates=order.compensates,
            max_attempts=order.max_attempts,
            retry=retry_decoder.decode(order.retry) if order.retry else None,
            heartbeat_timeout_ms=order.heartbeat_ms,
        )
        await publisher.publish(
            encode(message),
            queue,
            headers=_trace_headers(traceparent),
            message_id=f"{order.job_id}:{order.step}:{order.lease}",
        )

    async def announce(self, job_id: str, step: int, attempt: int, lease: int) -> None:
        """Tell the schedulers that a step's outcome is recorded."""
        _, publisher = self._ready()
        event = StepRecorded(job_id=job_id, step=step, attempt=attempt, lease=lease, by=self.by)
        await publisher.publish(
            encode(event), self.names.events, message_id=f"{job_id}:{step}:{lease}:recorded"
        )

    async def reply(self, reply_to: str, correlation_id: str, finished: JobFinished) -> bool:
        """Publish a final job state to a submitter's reply queue. False if it is gone."""
        if not reply_to:
            return False
        _, publisher = self._ready()
        assert self.channel is not None
        try:
            await publisher.publish(
                encode(finished),
                reply_to,
                correlation_id=correlation_id or None,
                message_id=f"{finished.job_id}:finished",
                exchange=self.channel.default_exchange,
            )
        except PublishFailed:
            return False
        return True


def _trace_headers(traceparent: str) -> Mapping[str, Any] | None:
    return {TRACEPARENT: traceparent} if traceparent else None
