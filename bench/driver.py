"""The phases, run the same way against any system (a :class:`Target`).

- e2e / multistep: workers up and warmed, then every job offered at once with at most
  ``width`` submissions in flight (closed loop, like ``sasfleet bench``); throughput from
  the first submit to the last completion the producer saw.
- drain: every job submitted with no worker running, then the workers started;
  throughput from their start to the last completion.
- load: workers up and warmed, then one submission every ``1/rate`` s whether or not
  the earlier ones were confirmed (open loop); latency counts from the scheduled time, so
  a producer falling behind shows as latency rather than as a lower load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Protocol

from bench.model import Measurement, RunSpec
from bench.procs import cpu_delta, cpu_snapshot, server_pids
from bench.stats import latency_summary
from bench.tracker import Tracker


class Target(Protocol):
    """One system as the driver sees it: a producer, its workers, its result store."""

    width: int  # submissions in flight at once in a closed loop

    async def open(self, tracker: Tracker) -> None:
        """Connect the producer and the completion watcher; declare the queues."""

    def start_workers(self) -> None:
        """Start the worker processes (without waiting for them)."""

    async def ready(self) -> None:
        """Return once every worker consumes; raise if one died."""

    async def submit(self, n: int, steps: int) -> str:
        """Submit job ``n`` (``steps`` steps) durably; return the handle whose completion
        the tracker will be told about."""

    async def verify(self, handles: list[str]) -> int:
        """How many of ``handles`` the result store holds as succeeded, right result."""

    def process_groups(self) -> dict[str, list[int]]:
        """The pids of each kind of process of the system (workers with children)."""

    async def close(self) -> None:
        """Stop the workers, disconnect, delete this run's queues and keys."""


async def _submit_closed(
    target: Target, tracker: Tracker, ns: range, steps: int, width: int
) -> list[str]:
    gate = asyncio.Semaphore(width)
    handles: list[str] = []

    async def one(n: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            handle = await target.submit(n, steps)
        tracker.expect(handle, t0)
        handles.append(handle)

    await asyncio.gather(*(one(n) for n in ns))
    return handles


async def _warm(target: Target, tracker: Tracker, spec: RunSpec) -> None:
    """Start the workers and put ``spec.warmup`` jobs through, unmeasured: connections,
    queues, caches and lazy imports are warm before the clock starts."""
    target.start_workers()
    await target.ready()
    if spec.warmup:
        await _submit_closed(target, tracker, range(-spec.warmup, 0), spec.steps, target.width)
        if not await tracker.wait(spec.stall_timeout_s):
            raise RuntimeError(f"warm-up stalled with {tracker.pending} jobs pending")


async def _finish(
    target: Target,
    tracker: Tracker,
    spec: RunSpec,
    handles: list[str],
    started: float,
    cpu_before: dict[str, float] | None,
    groups: dict[str, list[int]],
) -> Measurement:
    complete = await tracker.wait(spec.stall_timeout_s)
    cpu = cpu_delta(cpu_before, groups) if cpu_before is not None else {}
    last = tracker.last(handles)
    elapsed = max(0.0, last - started)
    completed = await target.verify(handles)
    p50, p95, p99 = latency_summary(tracker.latencies(handles))
    return Measurement(
        system=spec.system,
        phase=spec.phase,
        round=spec.round,
        submitted=len(handles),
        completed=completed,
        elapsed_s=elapsed,
        throughput=completed / elapsed if elapsed > 0 else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        cpu_s=cpu,
        error="" if complete else f"stalled: {tracker.pending} jobs never seen to end",
    )


def _cpu_groups(target: Target, spec: RunSpec) -> dict[str, list[int]]:
    """The processes whose CPU a run counts, by kind (this process is the producer)."""
    return {
        "producer": [os.getpid()],
        **target.process_groups(),
        **server_pids(spec.amqp_url, spec.redis_url),
    }


async def run_closed(target: Target, tracker: Tracker, spec: RunSpec) -> Measurement:
    """e2e and multistep: every job offered at once, ``width`` submissions in flight."""
    await _warm(target, tracker, spec)
    groups = _cpu_groups(target, spec)
    before = cpu_snapshot(groups)
    started = time.perf_counter()
    handles = await _submit_closed(target, tracker, range(spec.jobs), spec.steps, target.width)
    return await _finish(target, tracker, spec, handles, started, before, groups)


async def run_drain(target: Target, tracker: Tracker, spec: RunSpec) -> Measurement:
    """drain: everything queued with no worker running, then the workers started."""
    handles = await _submit_closed(target, tracker, range(spec.jobs), spec.steps, target.width)
    started = time.perf_counter()
    target.start_workers()
    readiness = asyncio.create_task(target.ready())
    try:
        result = await _finish(target, tracker, spec, handles, started, None, {})
    finally:
        if not readiness.done():
            readiness.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readiness
    first = tracker.first(handles)
    result.startup_s = first - started if first else 0.0
    return result


async def run_open(target: Target, tracker: Tracker, spec: RunSpec) -> Measurement:
    """load: one submission every ``1/spec.rate`` s, never waiting for earlier ones."""
    if spec.rate <= 0:
        raise ValueError("the load phase needs a rate")
    await _warm(target, tracker, spec)
    groups = _cpu_groups(target, spec)
    before = cpu_snapshot(groups)
    handles: list[str] = []
    lags: list[float] = []
    submitting: set[asyncio.Task[None]] = set()

    async def one(n: int, scheduled: float) -> None:
        lags.append(time.perf_counter() - scheduled)
        handle = await target.submit(n, spec.steps)
        tracker.expect(handle, scheduled)
        handles.append(handle)

    started = time.perf_counter() + 0.01
    for n in range(spec.jobs):
        scheduled = started + n / spec.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n, scheduled))
        submitting.add(task)
        task.add_done_callback(submitting.discard)
    if submitting:
        await asyncio.gather(*submitting)
    offered_for = time.perf_counter() - started
    result = await _finish(target, tracker, spec, handles, started, before, groups)
    result.offered_rate = spec.jobs / offered_for if offered_for > 0 else 0.0
    result.max_lag_ms = max(lags, default=0.0) * 1000
    return result


async def run_phase(target: Target, spec: RunSpec) -> Measurement:
    """Open ``target``, run ``spec.phase`` through it, and always close it."""
    tracker = Tracker()
    try:
        await target.open(tracker)
        if spec.phase == "drain":
            return await run_drain(target, tracker, spec)
        if spec.phase == "load":
            return await run_open(target, tracker, spec)
        return await run_closed(target, tracker, spec)
    finally:
        await target.close()
