"""Producer and consumer spans for RabbitMQ, per the OpenTelemetry messaging conventions.

Written here once instead of using ``opentelemetry-instrumentation-aio-pika``, which emits
the pre-1.26 attribute names (``messaging.destination``, ``net.peer.name``,
``messaging.operation``; schema 1.11), names spans ``<destination> <operation>``, adds no
creation-context links, and wraps ``Queue.consume`` callbacks only (a ``queue.iterator()``
consumer gets no spans). The AMQP adapter (shared/amqp) calls these with plain values, so
this module needs no aio-pika and the adapter no OpenTelemetry.

- Producer: ``publish <destination>``, kind PRODUCER, ``messaging.operation.type=send``,
  ``messaging.operation.name=publish``; destination ``{exchange}:{routing key}`` (either
  alone when the other is empty; ``amq.default`` when both are).
- Consumer: ``process <destination>``, kind CONSUMER, ``messaging.operation.type=process``;
  destination ``{exchange}:{routing key}:{queue}`` without empty parts, and the queue left
  out when it equals the routing key. The span's parent is the producer's context and it
  links to it.
- A reply to a submitter's private queue is a temporary destination: the span name says
  ``(temporary)`` to keep span names low in cardinality.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry.semconv._incubating.attributes import messaging_attributes as m
from opentelemetry.semconv.attributes import server_attributes
from opentelemetry.util.types import AttributeValue

from sasfleet.shared.telemetry import tracing
from sasfleet.shared.telemetry.tracing import NO_SPAN, Attributes, Traced

SYSTEM = "rabbitmq"


def producer_destination(exchange: str, routing_key: str) -> str:
    """``messaging.destination.name`` of a publish."""
    if exchange and routing_key:
        return f"{exchange}:{routing_key}"
    return exchange or routing_key or "amq.default"


def consumer_destination(exchange: str, routing_key: str, queue: str) -> str:
    """``messaging.destination.name`` of a delivery."""
    parts = [exchange, routing_key] + ([queue] if queue != routing_key else [])
    return ":".join(p for p in parts if p) or "amq.default"


def _base(
    destination: str,
    routing_key: str,
    operation: str,
    operation_type: str,
    message_id: str | None,
    correlation_id: str | None,
    body_size: int,
    server: tuple[str, int] | None,
    temporary: bool,
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        m.MESSAGING_SYSTEM: SYSTEM,
        m.MESSAGING_OPERATION_NAME: operation,
        m.MESSAGING_OPERATION_TYPE: operation_type,
        m.MESSAGING_DESTINATION_NAME: destination,
        m.MESSAGING_MESSAGE_BODY_SIZE: body_size,
    }
    if routing_key:
        attributes[m.MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY] = routing_key
    if temporary:
        attributes[m.MESSAGING_DESTINATION_TEMPORARY] = True
    if message_id:
        attributes[m.MESSAGING_MESSAGE_ID] = message_id
    if correlation_id:
        attributes[m.MESSAGING_MESSAGE_CONVERSATION_ID] = correlation_id
    if server is not None:
        attributes[server_attributes.SERVER_ADDRESS] = server[0]
        attributes[server_attributes.SERVER_PORT] = server[1]
    return attributes


def _span_name(operation: str, destination: str, temporary: bool) -> str:
    return f"{operation} (temporary)" if temporary else f"{operation} {destination}"


def publish_span(
    exchange: str,
    routing_key: str,
    headers: MutableMapping[str, Any],
    *,
    message_id: str | None,
    correlation_id: str | None,
    body_size: int,
    server: tuple[str, int] | None = None,
    traceparent: str = "",
    attributes: Attributes | None = None,
    temporary: bool = False,
) -> Traced:
    """Start the PRODUCER span of one publish and inject its context into ``headers``.

    Parent: the current span, else the job's stored ``traceparent``, else a new trace (a
    client's submission starts the job's trace here). :data:`NO_SPAN` when tracing is off.
    """
    if not tracing.active():
        return NO_SPAN
    destination = producer_destination(exchange, routing_key)
    span_attributes = _base(
        destination,
        routing_key,
        "publish",
        "send",
        message_id,
        correlation_id,
        body_size,
        server,
        temporary,
    )
    if attributes:
        span_attributes.update(attributes)
    return tracing.producer_span(
        _span_name("publish", destination, temporary),
        span_attributes,
        headers,
        traceparent=traceparent,
    )


def process_span(
    queue: str,
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any],
    *,
    message_id: str | None,
    correlation_id: str | None,
    body_size: int,
    delivery_tag: int | None,
    redelivered: bool,
    server: tuple[str, int] | None = None,
) -> Traced:
    """Start the CONSUMER span of one delivery (see :func:`tracing.consumer_span`)."""
    if not tracing.active():
        return NO_SPAN
    destination = consumer_destination(exchange, routing_key, queue)
    attributes = _base(
        destination,
        routing_key,
        "process",
        "process",
        message_id,
        correlation_id,
        body_size,
        server,
        False,
    )
    if delivery_tag is not None:
        attributes[m.MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG] = delivery_tag
    attributes["sasfleet.redelivered"] = redelivered
    return tracing.consumer_span(_span_name("process", destination, False), attributes, headers)
