"""Confirmed, mandatory, persistent publishing that retries through broker outages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)

from sasfleet.shared.errors import PublishFailed
from sasfleet.shared.telemetry.messaging import publish_span
from sasfleet.shared.telemetry.traceparent import TRACEPARENT
from sasfleet.shared.telemetry.tracing import NO_SPAN, Attributes

log = logging.getLogger(__name__)

_TRANSIENT = (
    AMQPError,
    aiormq.exceptions.AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    RuntimeError,
)


class Publisher:
    """Publishes on a channel opened with publisher confirms and returns raised.

    ``publish`` returns only when the broker confirmed the message (it is then stored in a
    durable queue). A publish that fails during a broker outage is retried until
    ``give_up_after_s``; after that :class:`PublishFailed` is raised, so the caller does not
    ack what caused it and the work is redone later: never dropped silently.

    Each publish is a PRODUCER span when tracing is on (its context goes out in the
    ``traceparent``/``tracestate`` headers); ``server`` is the broker's address for it.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        exchange: AbstractExchange,
        *,
        give_up_after_s: float = 60.0,
        app_id: str = "sasfleet",
        server: tuple[str, int] | None = None,
    ) -> None:
        self.channel = channel
        self.exchange = exchange
        self.give_up_after_s = give_up_after_s
        self.app_id = app_id
        self.server = server

    async def publish(
        self,
        body: bytes,
        routing_key: str,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        exchange: AbstractExchange | None = None,
        priority: int | None = None,
        traceparent: str = "",
        span_attributes: Attributes | None = None,
        temporary: bool = False,
    ) -> None:
        """Publish and wait for the broker's confirm.

        ``traceparent`` is the job's trace context: the publish span's parent when no span
        is current (timers, recoveries), and, with tracing off, passed on as the header
        as it is, so that a traced consumer still joins the job's trace. ``temporary``
        marks a private reply queue (its name stays out of the span's name).
        """
        target = exchange or self.exchange
        message_headers: dict[str, Any] = dict(headers) if headers else {}
        span = publish_span(
            target.name,
            routing_key,
            message_headers,
            message_id=message_id,
            correlation_id=correlation_id,
            body_size=len(body),
            server=self.server,
            traceparent=traceparent,
            attributes=span_attributes,
            temporary=temporary,
        )
        if span is NO_SPAN and traceparent:
            message_headers.setdefault(TRACEPARENT, traceparent)
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=message_headers or None,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            app_id=self.app_id,
            priority=priority,
        )
        with span:
            await self._publish(target.name, routing_key, body, properties)

    async def _send(
        self, exchange: str, routing_key: str, body: bytes, properties: aiormq.spec.Basic.Properties
    ) -> None:
        """One publish, returning when the broker confirmed it.

        Straight to aiormq, with ``wait=False``: by default it holds the channel's lock
        until the frame is written and drained, so concurrent publishes on a channel go
        out one per event-loop round trip (aio-pika's ``Exchange.publish`` always
        waits). The broker's confirm is awaited either way."""
        if self.channel.is_closed:
            raise ChannelInvalidStateError("the publishing channel is closed")
        # The concrete channel: the abstract class does not declare ``wait``.
        channel = cast(aiormq.Channel, await self.channel.get_underlay_channel())
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
            wait=False,
        )

    async def _publish(
        self, exchange: str, routing_key: str, body: bytes, properties: aiormq.spec.Basic.Properties
    ) -> None:
        try:
            try:  # the common case, without building a retry loop per message
                await self._send(exchange, routing_key, body, properties)
                return
            except DeliveryError:
                raise
            except _TRANSIENT:
                log.warning("publish to %r failed; retrying", routing_key, exc_info=True)
            async for attempt in AsyncRetrying(
                # An unroutable or nacked message is not an outage: it fails at once.
                retry=retry_if_exception_type(_TRANSIENT)
                & retry_if_not_exception_type(DeliveryError),
                wait=wait_exponential(multiplier=0.1, max=5.0),
                stop=stop_after_delay(self.give_up_after_s),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            ):
                with attempt:
                    await self._send(exchange, routing_key, body, properties)
        except DeliveryError as exc:
            raise PublishFailed(
                f"broker refused or returned the message to {routing_key!r}: {exc}"
            ) from exc
        except _TRANSIENT as exc:
            raise PublishFailed(f"publish to {routing_key!r} failed: {exc}") from exc
