"""The Python client: submit jobs, wait for them, read their state.

async with Client() as client:
    job_id = await client.submit("echo", {"x": 1})
    outcome = await client.wait(job_id, timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from sasfleet.shared.amqp.fleet import NOTIFY_HEADER, FleetChannel
from sasfleet.shared.config import Settings, load_settings
from sasfleet.shared.errors import InvalidJob, JobTimeout
from sasfleet.shared.ids import instance_id, new_job_id, submitted_job_id
from sasfleet.shared.messages.codec import (
    DECODE_ERRORS,
    any_decoder,
    encode,
    error_decoder,
    job_finished_decoder,
    submit_decoder,
)
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.messages.submit import SCHEMA_VERSION, StepSpec, SubmitJob
from sasfleet.shared.state.connection import redis_for
from sasfleet.shared.state.records import Announce
from sasfleet.shared.state.store import StateStore, StoreTimings
from sasfleet.shared.state.views import JobView
from sasfleet.shared.statemachine import JOB_TERMINAL

log = logging.getLogger(__name__)
T = TypeVar("T")

_POLL_S = 1.0
# Coalesced submit messages awaiting a confirm before further submissions wait to join
# the next message (a round trip at most, and only while the broker is busy with these).
_UNCONFIRMED = 2
_MAX_POLL_S = 8.0
_KEEP_FINISHED = 100_000


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """The final state of a job."""

    job_id: str
    status: str
    result: Any = None
    error: ErrorInfo | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def _prepared(job: SubmitJob) -> tuple[bytes, str]:
    """``job`` with its id set, encoded, and checked as the scheduler will check it (a
    Struct built in Python skips its fields' limits and patterns, which only decoding
    checks): an invalid job raises :class:`InvalidJob` here instead of being sent."""
    if job.job_id is None:
        job = msgspec.structs.replace(job, job_id=submitted_job_id(None, job.idempotency_key))
    body = encode(job)
    try:
        submit_decoder.decode(body).step_specs()
    except (*DECODE_ERRORS, ValueError) as exc:
        raise InvalidJob(f"invalid job {job.job_id}: {exc}") from exc
    return body, str(job.job_id)


_BATCH_HEAD = b'{"kind":"submit_batch","v":%d,"jobs":[' % SCHEMA_VERSION
_BATCH_TAIL = b"]}"


def _batch_body(jobs: list[bytes]) -> bytes:
    """A ``submit_batch`` message from encoded jobs (each encoded once)."""
    return _BATCH_HEAD + b",".join(jobs) + _BATCH_TAIL


def _chunks(
    items: Sequence[T], body: Callable[[T], bytes], size: int, max_bytes: int
) -> Iterator[list[T]]:
    """Groups of at most ``size`` jobs whose batch message stays within ``max_bytes``."""
    room = max_bytes - len(_BATCH_HEAD) - len(_BATCH_TAIL)
    chunk: list[T] = []
    used = 0
    for item in items:
        length = len(body(item)) + 1
        if chunk and (len(chunk) == size or used + length > room):
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += length
    if chunk:
        yield chunk


class Client:
    """Submits jobs over RabbitMQ (confirmed) and learns their end from a Redis channel of
    its own, which the state scripts publish to as the job ends. Pub/sub is a hint: a
    job not heard of is read from Redis (after 1 s, then less and less often), so a lost
    notification never makes ``wait`` hang."""

    def __init__(self, settings: Settings | None = None, *, coalesce: int = 100) -> None:
        """``coalesce``: submissions made at the same moment (in one event-loop iteration,
        e.g. by many tasks at once, or while earlier ones await their confirm) travel
        together, up to this many jobs to a message; 1 sends every job as a message of
        its own."""
        self.settings = settings or load_settings()
        self.coalesce = coalesce
        self._coalescing: list[tuple[bytes, str, asyncio.Future[None]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # messages awaiting their confirm
        self._flush_due = False
        self.by = instance_id("client")
        self._fleet = FleetChannel(
            self.settings.amqp_url.get_secret_value(), self.settings.prefix, self.by
        )
        self._redis = redis_for(self.settings)
        self._store = StateStore(
            self._redis, self.settings.prefix, timings=StoreTimings.of(self.settings)
        )
        self._reader = self._store.reader
        self._notify = f"{self._store.keys.notify_prefix}{self.by}"
        self._pubsub: Any = None  # redis-py's PubSub (or ClusterPubSub)
        self._listener: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[asyncio.Future[JobOutcome]]] = {}
        self._finished: OrderedDict[str, JobOutcome] = OrderedDict()
        # Jobs this client submitted: their end is published to its channel.
        self._replying: set[str] = set()
        # Awaited job -> (when to read it, monotonic; the wait before the next read).
        self._next_poll: dict[str, tuple[float, float]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        await self._fleet.open(prefetch=1)
        await self._redis.ping()  # a cluster client learns the cluster's layout here
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._notify)
        self._listener = asyncio.create_task(self._listen())
        self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        self._closing = True
        tasks = {t for t in (self._poller, self._listener) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            # redis-py can swallow a cancel that lands mid-command; the loops also watch
            # _closing, and close() never waits on them for more than a moment.
            await asyncio.wait(tasks, timeout=2.0)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._fleet.close()
        await self._redis.aclose()

    async def submit(
        self,
        task: str | None = None,
        payload: Any = None,
        *,
        steps: list[StepSpec] | None = None,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        delay_s: float | None = None,
        start_at: datetime | None = None,
        **step_options: Any,
    ) -> str:
        """Submit a job (``task`` + ``payload``, or ``steps``); returns its id once the
        broker confirmed the submission. ``step_options`` are the one-step job's
        :class:`StepOptions` (``pool``, ``max_attempts``, ``retry``, ``timeout_s``, ...)."""
        return await self.submit_job(
            SubmitJob(
                task=task,
                payload=payload,
                steps=steps,
                job_id=job_id,
                idempotency_key=idempotency_key,
                delay_s=delay_s,
                start_at=start_at,
                **step_options,
            )
        )

    async def submit_job(self, job: SubmitJob) -> str:
        """Submit a prepared :class:`SubmitJob`; returns the job id once the broker
        confirmed it (with the jobs submitted at the same moment: see ``coalesce``)."""
        body, job_id = _prepared(job)
        if self.coalesce <= 1:
            await self._send([(body, job_id)])
            return job_id
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._coalescing.append((body, job_id, confirmed))
        self._flush_soon()
        await confirmed
        return job_id

    async def submit_many(self, jobs: Iterable[SubmitJob], *, batch_size: int = 100) -> list[str]:
        """Submit many jobs; returns their ids, in order, once the broker confirmed all.

        Up to ``batch_size`` jobs travel in one ``submit_batch`` message (one publish, one
        confirm, one delivery for all), the batches' confirms in flight together;
        ``batch_size=1`` sends each job as a message of its own. A batch never grows past
        the fleet's message size limit; a job too large for it goes alone (and is refused
        by the scheduler with the reason). Every job is checked before any is sent: an
        invalid one raises :class:`InvalidJob` and nothing is submitted."""
        encoded = [_prepared(j) for j in jobs]
        limit = self.settings.max_payload_bytes
        groups = _chunks(encoded, itemgetter(0), max(1, batch_size), limit)
        await asyncio.gather(*(self._send(group) for group in groups))
        return [job_id for _, job_id in encoded]

    def _flush_soon(self) -> None:
        """Send the waiting submissions at the end of this loop iteration, unless
        ``_UNCONFIRMED`` of their messages await a confirm already: then they wait for one
        (joined by those that come meanwhile), so a steady stream travels in batches too."""
        if self._coalescing and not self._flush_due and len(self._sending) < _UNCONFIRMED:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._send_coalesced)

    def _send_coalesced(self) -> None:
        self._flush_due = False
        waiting, self._coalescing = self._coalescing, []
        groups = _chunks(waiting, itemgetter(0), self.coalesce, self.settings.max_payload_bytes)
        for group in groups:
            task = asyncio.create_task(self._send_confirming(group))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not self._closing:
            self._flush_soon()

    async def _send_confirming(self, group: list[tuple[bytes, str, asyncio.Future[None]]]) -> None:
        """Send ``group`` and tell each of its submitters how it went."""
        try:
            await self._send([(body, job_id) for body, job_id, _ in group])
        except BaseException as exc:
            for *_, future in group:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for *_, future in group:
            if not future.done():
                future.set_result(None)

    async def _send(self, group: list[tuple[bytes, str]]) -> None:
        """One message: a lone job as it is, several as a ``submit_batch``."""
        ids = [job_id for _, job_id in group]
        if len(group) == 1:
            await self._publish(group[0][0], ids[0], ids)
        else:
            await self._publish(_batch_body([b for b, _ in group]), f"batch-{new_job_id()}", ids)

    async def _publish(self, body: bytes, message_id: str, job_ids: list[str]) -> None:
        assert self._fleet.publisher is not None and self._pubsub, "connect() first"
        await self._fleet.publisher.publish(
            body,
            self._fleet.names.submit,
            message_id=message_id,
            correlation_id=message_id,
            headers={NOTIFY_HEADER: self._notify},
        )
        self._replying.update(job_ids)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobOutcome:
        """Wait until the job ends; raises :class:`JobTimeout` after ``timeout`` seconds."""
        done = self._finished.pop(job_id, None)
        if done is None and job_id not in self._replying:
            done = await self._read_outcome(job_id)
        if done is not None:
            return done
        future: asyncio.Future[JobOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        self._next_poll.setdefault(job_id, (time.monotonic() + _POLL_S, _POLL_S))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise JobTimeout(f"job {job_id} did not finish within {timeout} s") from exc
        finally:
            waiters = self._waiters.get(job_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(job_id, None)
                self._next_poll.pop(job_id, None)

    async def cancel(self, job_id: str) -> str:
        """Ask a job to stop: steps not yet started never start, a running step's handler
        is cancelled (cooperatively), and the steps that succeeded are compensated; the job
        ends CANCELLED. Returns what the job was doing ("requested"), or its final status
        if it had already ended."""
        result = await self._store.cancel(job_id, self.by)
        if isinstance(result, Announce):
            await self._fleet.announce(job_id, result.step, result.attempt, result.lease)
            return "requested"
        return result if result in JOB_TERMINAL else "requested"

    async def get(self, job_id: str) -> JobView | None:
        """The job's full document (status, steps, history), or None."""
        return await self._reader.job(job_id)

    def _resolve(self, outcome: JobOutcome) -> None:
        self._replying.discard(outcome.job_id)
        waiters = self._waiters.pop(outcome.job_id, None)
        if not waiters:
            self._finished[outcome.job_id] = outcome
            while len(self._finished) > _KEEP_FINISHED:
                self._finished.popitem(last=False)
            return
        for future in waiters:
            if not future.done():
                future.set_result(outcome)

    async def _listen(self) -> None:
        """Resolve waiters from the job_finished messages published to this client."""
        while not self._closing:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except Exception:  # Redis went away: redis-py reconnects and resubscribes
                log.warning("lost the job notification channel; reading jobs meanwhile")
                self._next_poll = {j: (0.0, wait) for j, (_, wait) in self._next_poll.items()}
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                finished = job_finished_decoder.decode(message["data"])
            except DECODE_ERRORS:
                continue
            self._resolve(
                JobOutcome(finished.job_id, finished.status, finished.result, finished.error)
            )

    async def _read_outcome(self, job_id: str) -> JobOutcome | None:
        finished = await self._store.finished(job_id)
        if finished is None:
            return None
        return JobOutcome(
            job_id,
            finished.status,
            any_decoder.decode(finished.result) if finished.result else None,
            error_decoder.decode(finished.error) if finished.error else None,
        )

    async def _poll(self) -> None:
        """The fallback: read the state of jobs awaited for a while (after 1 s, then
        backing off to every 8 s each), in case their notification was lost."""
        while not self._closing:
            await asyncio.sleep(_POLL_S / 4)
            now = time.monotonic()
            due = [j for j, (at, _) in self._next_poll.items() if at <= now]
            if not due:
                continue
            for job_id in due:
                wait = min(_MAX_POLL_S, 2 * self._next_poll[job_id][1])
                self._next_poll[job_id] = (now + wait, wait)
            with contextlib.suppress(Exception):
                statuses = await self._reader.statuses(due)
                for job_id, status in statuses.items():
                    if status in JOB_TERMINAL:
                        outcome = await self._read_outcome(job_id)
                        if outcome is not None:
                            self._resolve(outcome)
