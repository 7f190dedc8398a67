"""Decode -> handle -> ack after record. Ack, requeue and dead-letter are decided here only.

A handler returns a typed outcome; it never acks itself. A dead-letter is a confirmed
publish of the original body to the dead-letter exchange with the reason in its headers,
then an ack (RabbitMQ's own reject cannot carry a reason).

Each delivery is handled inside its CONSUMER span (when tracing is on), which the outcome
marks: a dead letter or a requeue is an error with its reason. Deliveries and dead letters
are counted by queue, outcome and reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue

from sasfleet.shared.amqp import acks
from sasfleet.shared.amqp.publisher import Publisher
from sasfleet.shared.amqp.topology import BY_HEADER, QUEUE_HEADER, REASON_HEADER, Names
from sasfleet.shared.errors import PublishFailed
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.messaging import process_span
from sasfleet.shared.telemetry.tracing import NO_SPAN, OUTCOME, Traced

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ack:
    """The message's effect is recorded: remove it from the queue."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The message can never be processed: park it in the dead-letter queue with a reason.

    ``kind`` is the reason's class for metrics (a label cannot hold the free text):
    ``too_large``, ``invalid``, ``unknown_task`` or ``mismatch``.
    """

    reason: str
    kind: str = "invalid"


@dataclass(frozen=True, slots=True)
class Requeue:
    """A dependency failed (e.g. Redis is down): deliver the message again later."""

    reason: str


Outcome = Ack | DeadLetter | Requeue


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a handler sees of a message: the services never touch aio-pika types."""

    body: bytes
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    headers: dict[str, Any]
    redelivered: bool

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> Delivery:
        return cls(
            message.body,
            message.message_id,
            message.correlation_id,
            message.reply_to,
            dict(message.headers or {}),
            bool(message.redelivered),
        )

    def header(self, name: str) -> str:
        """A header as text ("" when absent or not text)."""
        value = self.headers.get(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value if isinstance(value, str) else ""


Handler = Callable[[Delivery], Awaitable[Outcome]]

REQUEUE_DELAY_S = 1.0


class Consumer:
    """Runs ``handler`` for every delivery of one queue and settles each message once."""

    def __init__(
        self,
        queue: AbstractQueue,
        handler: Handler,
        publisher: Publisher,
        names: Names,
        by: str,
        server: tuple[str, int] | None = None,
    ) -> None:
        self.queue = queue
        self.server = server
        self.handler = handler
        self.publisher = publisher
        self.names = names
        self.by = by
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._tag = await self.queue.consume(self._on_message)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking deliveries, then wait up to ``grace_s`` for those in hand."""
        if self._tag is not None:
            try:
                await self.queue.cancel(self._tag)
            except Exception as exc:  # the channel may already be gone
                log.debug("cancel of %s failed: %s", self.queue.name, exc)
            self._tag = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_s)

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            with self._span(message) as span:
                outcome = await self._outcome(message)
                _mark(span, outcome)
                await self._settle(message, outcome)
        finally:
            self._in_flight.discard(task)

    def _span(self, message: AbstractIncomingMessage) -> Traced:
        if not tracing.active():
            return NO_SPAN
        return process_span(
            self.queue.name,
            message.exchange or "",
            message.routing_key or "",
            message.headers or {},
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            body_size=len(message.body),
            delivery_tag=message.delivery_tag,
            redelivered=bool(message.redelivered),
            server=self.server,
        )

    async def _outcome(self, message: AbstractIncomingMessage) -> Outcome:
        try:
            return await self.handler(Delivery.of(message))
        except Exception as exc:
            log.exception(
                "handling a message from %s failed; it will be redelivered", self.queue.name
            )
            return Requeue(f"{type(exc).__name__}: {exc}")

    async def _settle(self, message: AbstractIncomingMessage, outcome: Outcome) -> None:
        try:
            if isinstance(outcome, Ack):
                await acks.ack(message)
                metrics.DELIVERIES.labels(self.queue.name, "ack").inc()
            elif isinstance(outcome, DeadLetter):
                await self._dead_letter(message, outcome)
            else:
                await asyncio.sleep(REQUEUE_DELAY_S)
                await message.nack(requeue=True)
                acks.note_settled(message)
                metrics.DELIVERIES.labels(self.queue.name, "requeue").inc()
        except Exception as exc:
            # The channel closed under us: the broker redelivers the message, which is safe
            # because every effect is recorded idempotently before an ack.
            log.warning(
                "could not settle a message from %s (%s); the broker will redeliver it",
                self.queue.name,
                exc,
            )

    async def _dead_letter(self, message: AbstractIncomingMessage, outcome: DeadLetter) -> None:
        reason = outcome.reason
        log.warning(
            "dead-lettering a message from %s: %s",
            self.queue.name,
            reason,
            extra={"message_id": message.message_id},
        )
        headers = dict(message.headers or {})
        headers.update(
            {REASON_HEADER: reason[:1000], QUEUE_HEADER: self.queue.name, BY_HEADER: self.by}
        )
        try:
            await self.publisher.publish(
                message.body,
                self.names.dead,
                headers=headers,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                exchange=await self._dead_exchange(),
            )
        except PublishFailed:
            log.exception("dead-letter publish failed; the message will be redelivered")
            await message.nack(requeue=True)
            acks.note_settled(message)
            return
        await message.ack()
        acks.note_settled(message)
        metrics.DEAD_LETTERS.labels(self.queue.name, outcome.kind).inc()
        metrics.DELIVERIES.labels(self.queue.name, "dead_letter").inc()

    async def _dead_exchange(self) -> AbstractExchange:
        return await self.publisher.channel.get_exchange(self.names.dead_exchange, ensure=False)


def _mark(span: Traced, outcome: Outcome) -> None:
    """Record the outcome on the delivery's span: a dead letter or requeue is an error."""
    if span.span is None:
        return
    if isinstance(outcome, Ack):
        span.set({OUTCOME: "ack"})
    elif isinstance(outcome, DeadLetter):
        span.set({OUTCOME: "dead_letter"})
        span.error(outcome.reason, error_type=f"dead_letter.{outcome.kind}")
    else:
        span.set({OUTCOME: "requeue"})
        span.error(outcome.reason, error_type="requeue")
