"""A service's AMQP side: one robust connection, a confirming channel, the declared
topology, and the few kinds of message the fleet publishes."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from aio_pika.abc import (
    AbstractChannel,
    AbstractQueue,
    AbstractRobustConnection,
)

from sasfleet.shared.amqp.connection import connect
from sasfleet.shared.amqp.consumer import Consumer, Handler
from sasfleet.shared.amqp.monitor import QueueMonitor
from sasfleet.shared.amqp.publisher import Publisher
from sasfleet.shared.amqp.topology import Names, Topology
from sasfleet.shared.errors import PublishFailed
from sasfleet.shared.messages.codec import encode
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.events import JobFinished, StepRecorded
from sasfleet.shared.telemetry import tracing
from sasfleet.shared.telemetry.traceparent import TRACEPARENT

# When a dispatch was published (ms since the epoch): the agent's queue-wait metric.
DISPATCHED_AT_HEADER = "x-sasfleet-dispatched-at"
# On a submission: the Redis channel (under ``Keys.notify_prefix``) to tell of the job's
# end, instead of a reply queue. The Python client listens there.
NOTIFY_HEADER = "x-sasfleet-notify"

__all__ = ["DISPATCHED_AT_HEADER", "NOTIFY_HEADER", "TRACEPARENT", "FleetChannel"]


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
        self.monitor = QueueMonitor(lambda: self.connection)
        self.dispatched_queues: set[str] = set()  # pool queues this process published to
        parts = urlsplit(url)
        # The broker's address, for the messaging spans' server.address/server.port.
        self.server = (parts.hostname or "localhost", parts.port or 5672)

    async def open(self, prefetch: int) -> None:
        self.connection = await connect(self.url, self.by, self.heartbeat_s)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.channel.set_qos(prefetch_count=prefetch)
        self.topology = Topology(self.channel, self.names)
        exchange = await self.topology.declare()
        self.publisher = Publisher(self.channel, exchange, app_id=self.by, server=self.server)

    async def open_monitor(self) -> None:
        """Connect without declaring anything: for read-only tools (``sasfleet top``, which
        reads queue depths through :attr:`monitor`)."""
        self.connection = await connect(self.url, self.by, self.heartbeat_s)

    async def close(self) -> None:
        await self.monitor.close()
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
            await topology.queue(queue_name), handler, publisher, self.names, self.by, self.server
        )
        await consumer.start()
        return consumer

    async def dispatch(self, order: DispatchOrder, traceparent: str = "") -> None:
        """Publish one attempt of a step to its pool's queue (declared on first use).

        The publish joins the job's trace: it is a child of the current span, else of
        ``traceparent`` (default: the job's, from the order)."""
        topology, publisher = self._ready()
        queue = self.names.pool(order.pool, order.priority)
        await topology.queue(queue)
        self.dispatched_queues.add(queue)
        await publisher.publish(
            order.message.encode(),
            queue,
            headers={DISPATCHED_AT_HEADER: int(time.time() * 1000)},
            message_id=f"{order.job_id}:{order.step}:{order.lease}",
            traceparent=traceparent or order.traceparent,
            span_attributes=tracing.job_attributes(
                order.job_id,
                order.step,
                task=order.task,
                attempt=order.attempt,
                lease=order.lease,
                compensates=order.compensates,
            )
            if tracing.active()
            else None,
        )

    async def announce(self, job_id: str, step: int, attempt: int, lease: int) -> None:
        """Tell the schedulers that a step's outcome is recorded."""
        _, publisher = self._ready()
        event = StepRecorded(job_id=job_id, step=step, attempt=attempt, lease=lease, by=self.by)
        await publisher.publish(
            encode(event),
            self.names.events,
            message_id=f"{job_id}:{step}:{lease}:recorded",
            span_attributes=tracing.job_attributes(job_id, step, attempt=attempt, lease=lease)
            if tracing.active()
            else None,
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
                temporary=True,
            )
        except PublishFailed:
            return False
        return True

    async def connected(self) -> bool:
        """Whether the connection to RabbitMQ is up now (a health probe)."""
        connection = self.connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()
