"""Running steps: take a slot, claim, ack, run the handler, record the outcome, announce."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from sasfleet.agent.context import StepContext
from sasfleet.agent.registry import Registry, TaskDef
from sasfleet.agent.slots import PrioritySlots
from sasfleet.shared.amqp.consumer import Ack, DeadLetter, Delivery, Outcome
from sasfleet.shared.amqp.fleet import DISPATCHED_AT_HEADER, FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.errors import DispatchMismatch, NonRetryableError, PublishFailed, RetryAfter
from sasfleet.shared.followups import Followups
from sasfleet.shared.messages.codec import DECODE_ERRORS, dispatch_decoder, encode
from sasfleet.shared.messages.dispatch import DispatchOrder, StepDispatch
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.records import Finished, Stale
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.statemachine import Failure, RetryPolicy, resolve_policy
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope
from sasfleet.shared.telemetry.tracing import NO_SPAN, Traced

log = logging.getLogger(__name__)

# Room for a dispatch's fields around its payload (ids, task name, retry policy).
DISPATCH_ENVELOPE_BYTES = 8192


@dataclass(slots=True)
class RunningStep:
    """A claimed step whose handler runs. ``stop_reason`` says why it was cancelled."""

    dispatch: StepDispatch
    context: StepContext
    task: asyncio.Task[None] | None = None
    stop_reason: ErrorInfo | None = None  # None: stopped without an outcome to record
    span: Traced = NO_SPAN  # the attempt's span: the handler's own spans nest under it
    finishing: bool = False  # its outcome is being recorded: a renewal may find it moved on

    def stop(self, reason: ErrorInfo | None) -> None:
        self.stop_reason = reason
        self.context.cancel_requested = True
        if self.task is not None:
            self.task.cancel()


class Runner:
    """Handles deliveries from the pool's queue; at most ``concurrency`` steps run at once."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: StateStore,
        fleet: FleetChannel,
        agent_id: str,
        concurrency: int,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.fleet = fleet
        self.followups = Followups(fleet)
        self.agent_id = agent_id
        self.fleet_policy = settings.retry_policy()
        self.slots = PrioritySlots(concurrency)
        self.running: dict[tuple[str, int], RunningStep] = {}
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="sasfleet-task")

    async def handle(self, message: Delivery) -> Outcome:
        """A delivery from the pool's normal queue."""
        return await self._handle(message, high=False)

    async def handle_high(self, message: Delivery) -> Outcome:
        """A delivery from the pool's high-priority queue: served first."""
        return await self._handle(message, high=True)

    async def _handle(self, message: Delivery, high: bool) -> Outcome:
        await self.slots.acquire(high)  # a slot is taken before a delivery is claimed
        handed_over = False
        try:
            outcome, handed_over = await self._take(message)
            return outcome
        finally:
            if not handed_over:
                self.slots.release()

    async def _take(self, message: Delivery) -> tuple[Outcome, bool]:
        # A dispatch carries a payload the scheduler accepted (within the limit) plus a
        # small envelope: only something larger is not one of ours.
        limit = self.settings.max_payload_bytes + DISPATCH_ENVELOPE_BYTES
        if len(message.body) > limit:
            return DeadLetter(
                f"dispatch of {len(message.body)} bytes exceeds the limit of {limit} bytes "
                "(payload limit plus envelope)",
                "too_large",
            ), False
        try:
            d = dispatch_decoder.decode(message.body)
        except DECODE_ERRORS as exc:
            return DeadLetter(f"invalid step dispatch: {exc}"), False
        with job_scope(d.job_id, d.step, attempt=d.attempt, lease=d.lease, task=d.task):
            return await self._claim_and_start(message, d)

    async def _claim_and_start(self, message: Delivery, d: StepDispatch) -> tuple[Outcome, bool]:
        task = self.registry.tasks.get(d.task)
        try:
            claimed = await self.store.claim(
                d.job_id,
                d.step,
                d.lease,
                self.agent_id,
                self._policy(task, d),
                digest=hashlib.sha1(message.body, usedforsecurity=False).hexdigest(),
            )
        except DispatchMismatch as exc:
            # Not the dispatch the scheduler wrote from the record (forged, or altered on
            # the way): nothing ran, nothing was claimed; the real one still claims.
            log.warning("%s; dead-lettering it", exc, extra={"job_id": d.job_id, "step": d.step})
            metrics.DISPATCH_MISMATCHES.inc()
            return DeadLetter(str(exc), "mismatch"), False
        if not claimed:
            log.info(
                "dropping a stale or duplicate dispatch of %s step %d lease %d",
                d.job_id,
                d.step,
                d.lease,
                extra={"job_id": d.job_id, "step": d.step},
            )
            metrics.STALE_DISPATCHES.inc()
            tracing.current().event("stale or duplicate dispatch dropped")
            return Ack(), False
        metrics.ATTEMPTS.labels(d.task).inc()
        _observe_queue_wait(d.task, message)
        if task is None:
            reason = f"unknown task {d.task!r}: no handler registered on this agent"
            await self._finish(d, error=_failed(Failure.UNKNOWN_TASK, reason))
            return DeadLetter(reason, "unknown_task"), False
        # The claim is recorded: from here the step lives by its lease, not the delivery.
        running = RunningStep(d, self._context(d))
        running.span = tracing.job_span(
            f"{'compensate' if d.compensates is not None else 'run'} {d.task}",
            tracing.job_attributes(
                d.job_id,
                d.step,
                task=d.task,
                attempt=d.attempt,
                lease=d.lease,
                agent=self.agent_id,
                compensates=d.compensates,
            )
            if tracing.active()
            else {},
        )
        superseded = self.running.get((d.job_id, d.step))
        if superseded is not None:  # this agent still runs an attempt the claim fenced out
            superseded.stop(None)
        self.running[(d.job_id, d.step)] = running
        metrics.RUNNING_STEPS.set(len(self.running))
        with running.span.current():  # the task (and the handler) run inside the span
            running.task = asyncio.create_task(self._execute(running, task))
        return Ack(), True

    async def release_all(self) -> int:
        """Stop every running handler and hand its step back to the pool (shutdown after
        the grace period): another agent takes it up at once, under a new lease."""
        running = list(self.running.values())
        for r in running:
            r.stop(None)
        tasks = [r.task for r in running if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        released = 0
        for r in running:
            d = r.dispatch
            order = await self.store.release(d.job_id, d.step, d.lease, self.agent_id)
            if order is not None:
                await self.fleet.dispatch(order)
                released += 1
        return released

    def _policy(self, task: TaskDef | None, d: StepDispatch) -> RetryPolicy:
        """The step's retry policy: its own choices, else its task's, else the fleet's."""
        return resolve_policy(
            self.fleet_policy,
            (task.max_attempts, task.retry) if task else (None, None),
            (d.max_attempts, d.retry),
        )

    def _context(self, d: StepDispatch) -> StepContext:
        return StepContext(
            job_id=d.job_id,
            step=d.step,
            task=d.task,
            attempt=d.attempt,
            fencing_token=d.lease,
            idempotency_key=d.idempotency_key,
            agent_id=self.agent_id,
            compensates=d.compensates,
            _lease_check=functools.partial(self.store.lease_is_current, d.job_id, d.step, d.lease),
            _results=functools.partial(self.store.step_results, d.job_id),
        )

    async def _execute(self, running: RunningStep, task: TaskDef) -> None:
        d = running.dispatch
        try:
            await self._run_and_record(running, task)
        except asyncio.CancelledError:
            if running.stop_reason is not None:
                await self._finish(d, error=running.stop_reason)
            else:
                log.info(
                    "stopped %s step %d without an outcome",
                    d.job_id,
                    d.step,
                    extra={"job_id": d.job_id, "step": d.step},
                )
        except Exception:
            log.exception(
                "could not record the outcome of %s step %d; its lease will expire "
                "and the supervisor recovers it",
                d.job_id,
                d.step,
                extra={"job_id": d.job_id, "step": d.step},
            )
        finally:
            if self.running.get((d.job_id, d.step)) is running:  # not a newer attempt's
                del self.running[(d.job_id, d.step)]
            metrics.RUNNING_STEPS.set(len(self.running))
            self.slots.release()
            running.span.end()

    async def _run_and_record(self, running: RunningStep, task: TaskDef) -> None:
        d = running.dispatch
        try:
            result = await self._timed_call(running, task)
        except TimeoutError:
            message = f"attempt {d.attempt} ran past its {d.timeout_s:g} s timeout"
            await self._finish(d, error=_failed(Failure.START_TO_CLOSE_TIMEOUT, message))
        except msgspec.ValidationError as exc:
            message = f"payload does not match {task.name}: {exc}"
            await self._finish(d, error=_failed(Failure.INVALID_PAYLOAD, message))
        except RetryAfter as exc:
            await self._finish(
                d,
                error=_failed(Failure.RETRY_AFTER, str(exc)),
                retry_after_ms=int(exc.delay_s * 1000),
            )
        except Exception as exc:
            running.span.exception(exc)
            await self._finish(
                d,
                error=ErrorInfo(
                    type=type(exc).__name__,
                    message=str(exc) or type(exc).__name__,
                    retryable=not isinstance(exc, NonRetryableError),
                ),
            )
        else:
            await self._finish_with_result(d, result)

    async def _timed_call(self, running: RunningStep, task: TaskDef) -> Any:
        """The handler's call, its duration observed by task and outcome."""
        started, outcome = time.monotonic(), "failed"
        try:
            result = await self._call(running, task)
            outcome = "succeeded"
            return result
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        finally:
            metrics.STEP_DURATION.labels(task.name, outcome).observe(time.monotonic() - started)

    async def _call(self, running: RunningStep, task: TaskDef) -> Any:
        d = running.dispatch
        kwargs = task.arguments(task.decoder.decode(d.payload), running.context)
        timeout = d.timeout_s
        # asyncio.timeout, not wait_for: the handler runs in this task instead of a new one.
        async with asyncio.timeout(timeout):
            if task.is_async:
                return await task.fn(**kwargs)
            # A plain function runs off the event loop; on timeout or cancellation its
            # thread cannot be killed (it can watch ctx.cancel_requested), but a late
            # result is rejected by the lease check like any stale result.
            call = functools.partial(task.fn, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def _finish_with_result(self, d: StepDispatch, result: Any) -> None:
        try:
            body = encode(result)
        except (TypeError, msgspec.EncodeError) as exc:
            await self._finish(d, error=_failed(Failure.UNENCODABLE_RESULT, str(exc)))
            return
        limit = self.settings.max_payload_bytes
        if len(body) > limit:
            message = f"result of {len(body)} bytes exceeds the limit of {limit} bytes"
            await self._finish(d, error=_failed(Failure.RESULT_TOO_LARGE, message))
            return
        await self._finish(d, result=body)

    async def _finish(
        self,
        d: StepDispatch,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        """Record the outcome under this attempt's lease, then publish what follows: for a
        success, what the record followed it with; else an announcement to a scheduler."""
        running = self.running.get((d.job_id, d.step))
        if running is not None and running.dispatch.lease == d.lease:
            running.finishing = True
        span = tracing.current()  # the attempt's span (a delivery's, for an unknown task)
        if error is not None:
            metrics.count_timeout(error.type)
            span.error(f"{error.type}: {error.message}", error_type=error.type)
        recorded = await self.store.record(
            d.job_id,
            d.step,
            d.lease,
            self.agent_id,
            result=result,
            error=error,
            retry_after_ms=retry_after_ms,
            advance=True,
        )
        if isinstance(recorded, Stale):
            log.warning(
                "result of %s step %d attempt %d rejected: lease %d was taken over",
                d.job_id,
                d.step,
                d.attempt,
                d.lease,
                extra={"job_id": d.job_id, "step": d.step, "attempt": d.attempt},
            )
            metrics.STALE_RESULTS.labels(d.task).inc()
            span.error(f"lease {d.lease} was taken over: result rejected", error_type="StaleResult")
            return
        span.set({tracing.OUTCOME: "failed" if error is not None else "succeeded"})
        if isinstance(recorded, Finished):  # the job's last step: no scheduler round trip
            await self.followups.finished(d.job_id, recorded)
        elif isinstance(recorded, DispatchOrder):  # an earlier step: the next one goes out
            await self._publish_next(d, recorded)
        else:
            try:
                await self.fleet.announce(d.job_id, d.step, d.attempt, d.lease)
            except PublishFailed:
                log.warning("could not announce %s step %d; the supervisor will", d.job_id, d.step)

    async def _publish_next(self, d: StepDispatch, order: DispatchOrder) -> None:
        """Publish the dispatch of the step the record advanced the job to. Until it is
        settled, the recorded step stays due, and a supervisor publishes the dispatch in
        this agent's place if it never confirms it here."""
        try:
            await self.followups.carry_out(d.job_id, order)
        except PublishFailed:
            log.warning("could not dispatch %s step %d; the supervisor will", d.job_id, order.step)
            return
        await self.store.settle(d.job_id, d.step)


def _failed(failure: Failure, message: str) -> ErrorInfo:
    """An error of the fleet's own vocabulary."""
    return ErrorInfo(type=failure, message=message, retryable=failure.retryable)


def _observe_queue_wait(task: str, message: Delivery) -> None:
    """From the dispatch's publish to this claim (clocks of both hosts, so roughly)."""
    sent = message.headers.get(DISPATCHED_AT_HEADER)
    if isinstance(sent, int) and not isinstance(sent, bool):
        waited = time.time() - sent / 1000
        if waited >= 0:
            metrics.QUEUE_WAIT.labels(task).observe(waited)
