"""Fuzzing every queue's decoder through the real services (hypothesis): random bytes,
random JSON and schema-shaped junk published to ``<prefix>.submit``, ``<prefix>.events``,
``<prefix>.pool.default`` and its ``.high`` queue. No exception escapes a consumer: every
bad message is dead-lettered *by the service* (``x-sasfleet-reason`` set, which the broker's
own delivery-limit dead-lettering never does), the services stay up and a job still runs.

Each example is published and its dead letter awaited before the next, so a failing
example is shrunk against the live services.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sasfleet.shared.amqp.topology import QUEUE_HEADER, REASON_HEADER
from sasfleet.shared.client import Client
from sasfleet.tools.chaos_faults import dead_letters_it

T = TypeVar("T")

# --------------------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)

VALID: dict[str, dict[str, Any]] = {
    "submit": {"task": "echo", "payload": {"x": 1}, "max_attempts": 2, "pool": "default"},
    "events": {
        "kind": "step_recorded",
        "job_id": "j",
        "step": 0,
        "attempt": 1,
        "lease": 1,
        "by": "a",
    },
    "pool": {
        "kind": "dispatch",
        "job_id": "j",
        "step": 0,
        "task": "echo",
        "attempt": 1,
        "lease": 1,
        "idempotency_key": "j:0",
        "timeout_s": 1,
        "payload": {},
    },
}
# Values of the wrong type (or out of range) for any field of the three messages.
wrong_values = st.one_of(
    st.just(None),
    st.just(-1),
    st.just(0),
    st.just(""),
    st.just("has spaces"),
    st.just([]),
    st.just({}),
    st.just(1.5),
    st.just(2**70),
    st.text(max_size=5),
)


@st.composite
def schema_shaped(draw: st.DrawFn, kind: str) -> bytes:
    """A valid message of the queue with one thing broken."""
    doc = dict(VALID[kind])
    how = draw(st.sampled_from(["wrong", "drop", "extra", "tag", "truncate"]))
    field = draw(st.sampled_from(sorted(doc)))
    if how == "wrong":
        doc[field] = draw(wrong_values)
    elif how == "drop":
        doc.pop(field)
    elif how == "extra":
        doc[draw(st.sampled_from(["steps", "colour", "kind", "v", "delay_s"]))] = draw(json_values)
    elif how == "tag":
        doc["kind"] = draw(
            st.sampled_from(["dispatch", "step_recorded", "submit", "job_finished", 7])
        )
    body = msgspec.json.encode(doc)
    if how == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
    return body


def bodies(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2000),
        json_values.map(msgspec.json.encode),
        schema_shaped(kind),
    )


# --------------------------------------------------------------------------- the broker side


class LoopThread:
    """An event loop in a thread: hypothesis' examples run synchronously and publish on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Broker:
    """Publishes raw bodies and finds their dead letters (by message id)."""

    def __init__(self, url: str, dead_queue: str) -> None:
        self.url = url
        self.dead_queue = dead_queue
        self.dead: dict[str, AbstractIncomingMessage] = {}

    async def open(self) -> None:
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.dead_q = await self.channel.declare_queue(
            self.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )

    async def close(self) -> None:
        await self.connection.close()

    async def publish(self, body: bytes, queue: str, message_id: str) -> None:
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
            ),
            routing_key=queue,
        )

    async def dead_letter(self, message_id: str, timeout: float = 20.0) -> AbstractIncomingMessage:
        deadline = time.monotonic() + timeout
        while message_id not in self.dead:
            message = await self.dead_q.get(no_ack=True, fail=False)
            if message is not None:
                self.dead[message.message_id or ""] = message
            elif time.monotonic() > deadline:
                raise AssertionError(f"{message_id} was not dead-lettered within {timeout}s")
            else:
                await asyncio.sleep(0.02)
        return self.dead[message_id]


def header(message: AbstractIncomingMessage, name: str) -> str:
    value = (message.headers or {}).get(name)
    return value.decode() if isinstance(value, bytes) else str(value or "")


# --------------------------------------------------------------------------- the test

settings_for_queue = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def fuzz_queue(
    loop: LoopThread, broker: Broker, queue: str, kind: str, seen: dict[str, int]
) -> None:
    """Run the property on one queue: each bad body comes back as a dead letter with a
    reason, unchanged."""

    @settings_for_queue
    @given(body=bodies(kind))
    @example(body=b"[" * 100_000 + b"]" * 100_000)  # deeper than any decoder recurses
    @example(body=b"")
    @example(body=b"\xff\xfe\x00")
    def bad_message_is_dead_lettered(body: bytes) -> None:
        assume(dead_letters_it(kind, body))
        message_id = f"fuzz-{uuid.uuid4().hex}"
        loop.run(broker.publish(body, queue, message_id))
        dead = loop.run(broker.dead_letter(message_id))
        assert dead.body == body
        assert header(dead, REASON_HEADER), "dead-lettered without a reason"
        assert header(dead, QUEUE_HEADER) == queue
        seen[queue] += 1

    bad_message_is_dead_lettered()


@pytest.mark.timeout(240)
def test_every_queue_dead_letters_fuzzed_bad_messages_with_a_reason(
    services, settings: Any, names: Any
) -> None:
    queues = {
        names.submit: "submit",
        names.events: "events",
        names.pool("default"): "pool",
        names.pool("default", "high"): "pool",
    }
    loop = LoopThread()
    broker = Broker(settings.amqp_url.get_secret_value(), names.dead)
    loop.run(broker.open())
    seen: dict[str, int] = dict.fromkeys(queues, 0)
    try:
        for queue, kind in queues.items():
            fuzz_queue(loop, broker, queue, kind, seen)
    finally:
        loop.run(broker.close())
        loop.close()

    print(f"bad messages dead-lettered with a reason, per queue: {seen}")
    assert all(count >= 20 for count in seen.values()), seen
    for service in services.all():
        assert service.alive(), f"{service.name} died:\n{service.log()[-4000:]}"

    async def still_serving() -> Any:
        async with Client(settings) as client:
            job_id = await client.submit("echo", {"after": "fuzz"})
            return await client.wait(job_id, timeout=30)

    outcome = asyncio.run(still_serving())
    assert (outcome.status, outcome.result) == ("succeeded", {"after": "fuzz"})
