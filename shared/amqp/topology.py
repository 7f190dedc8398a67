"""Exchange and queue names (pure functions of the prefix) and one idempotent declare.

One durable direct exchange ``<prefix>`` routes by queue name; every durable queue is a
quorum queue with a delivery limit and the fleet's dead-letter exchange. Publishing to the
default exchange with the queue name as routing key works too (for raw AMQP clients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# A message that makes its consumer crash this often is dead-lettered by the broker.
DELIVERY_LIMIT = 10

REASON_HEADER = "x-sasfleet-reason"
QUEUE_HEADER = "x-sasfleet-queue"
BY_HEADER = "x-sasfleet-by"


@dataclass(frozen=True, slots=True)
class Names:
    """Every broker name of one fleet."""

    prefix: str

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def submit(self) -> str:
        return f"{self.prefix}.submit"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def pool(self, pool: str, priority: str = "") -> str:
        """A pool's queue; ``priority="high"`` names its high-priority queue."""
        base = f"{self.prefix}.pool.{pool}"
        return f"{base}.high" if priority == "high" else base


def queue_arguments(names: Names) -> dict[str, Any]:
    """Arguments of every work queue: quorum, bounded redelivery, dead-lettered."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead_exchange,
    }


class Topology:
    """Declares the fleet's exchanges and queues on a channel; safe to call repeatedly."""

    def __init__(self, channel: AbstractChannel, names: Names) -> None:
        self.channel = channel
        self.names = names
        self.exchange: AbstractExchange | None = None
        self._queues: dict[str, AbstractQueue] = {}

    async def declare(self) -> AbstractExchange:
        """The fleet exchange, dead-letter exchange and queue, submit and events queues."""
        n = self.names
        self.exchange = await self.channel.declare_exchange(
            n.exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dlx = await self.channel.declare_exchange(
            n.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await self.channel.declare_queue(
            n.dead, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx)
        for name in (n.submit, n.events):
            await self.queue(name)
        return self.exchange

    async def queue(self, name: str) -> AbstractQueue:
        """Declare (once per process) a work queue bound to the fleet exchange by its name."""
        if name not in self._queues:
            if self.exchange is None:
                await self.declare()
            assert self.exchange is not None
            queue = await self.channel.declare_queue(
                name, durable=True, arguments=queue_arguments(self.names)
            )
            await queue.bind(self.exchange, routing_key=name)
            self._queues[name] = queue
        return self._queues[name]
