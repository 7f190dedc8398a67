"""Reading, re-publishing and purging the dead-letter queue."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from sasfleet.shared.amqp.connection import connect
from sasfleet.shared.amqp.topology import BY_HEADER, QUEUE_HEADER, REASON_HEADER, Names

# Enough to list a large backlog in one look, small enough to hold unacked at once.
MAX_HELD = 10_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message and why it is there."""

    id: str
    queue: str  # where it came from (where a retry sends it)
    reason: str
    by: str
    message_id: str | None
    body: bytes = field(repr=False)
    headers: dict[str, Any] = field(repr=False)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    queue = _text(headers.get(QUEUE_HEADER)) or _text(headers.get("x-first-death-queue"))
    reason = _text(headers.get(REASON_HEADER)) or (
        f"broker dead-lettered it ({_text(headers.get('x-first-death-reason'))}; e.g. the "
        "delivery limit was reached)"
    )
    digest = hashlib.sha1(
        message.body + reason.encode() + queue.encode(), usedforsecurity=False
    ).hexdigest()[:12]
    return DeadLetter(
        id=message.message_id or digest,
        queue=queue,
        reason=reason,
        by=_text(headers.get(BY_HEADER)),
        message_id=message.message_id,
        body=message.body,
        headers=headers,
    )


class DeadLetterQueue:
    """The fleet's ``<prefix>.dead`` queue."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.names = Names(prefix)

    async def _take_all(
        self, channel: aio_pika.abc.AbstractChannel, limit: int
    ) -> list[AbstractIncomingMessage]:
        """Get up to ``limit`` messages, holding them unacked (so none is seen twice)."""
        queue = await channel.declare_queue(self.names.dead, passive=True)
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message)
        return taken

    async def peek(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters; they stay in the queue."""
        connection = await connect(self.url, "sasfleet-dead-list")
        try:
            channel = await connection.channel()
            taken = await self._take_all(channel, limit)
            for message in taken:
                await message.nack(requeue=True)
            return [describe(m) for m in taken]
        finally:
            await connection.close()

    async def retry(self, ids: set[str] | None) -> list[DeadLetter]:
        """Re-publish the dead letters with these ids (all when None) to the queues they
        came from, confirmed; returns those re-published (the rest stay)."""
        connection = await connect(self.url, "sasfleet-dead-retry")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            taken = await self._take_all(channel, MAX_HELD)
            done = []
            for message in taken:
                letter = describe(message)
                if (ids is not None and letter.id not in ids) or not letter.queue:
                    await message.nack(requeue=True)
                    continue
                headers = {
                    k: v
                    for k, v in letter.headers.items()
                    if not k.startswith(("x-sasfleet-", "x-death", "x-first-death", "x-last-death"))
                }
                headers["x-sasfleet-retried-from-dead"] = letter.reason[:200]
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body,
                        headers=headers,
                        message_id=message.message_id,
                        correlation_id=message.correlation_id,
                        reply_to=message.reply_to,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=letter.queue,
                    mandatory=True,
                )
                await message.ack()
                done.append(letter)
            return done
        finally:
            await connection.close()

    async def purge(self) -> int:
        """Drop every dead letter; returns how many."""
        connection = await connect(self.url, "sasfleet-dead-purge")
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.names.dead, passive=True)
            result = await queue.purge()
            return int(result.message_count or 0)
        finally:
            await connection.close()
