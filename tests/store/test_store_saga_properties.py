"""Whatever sequence of calls (claims, outcomes, recoveries, timers, cancels, stale leases)
reaches the state scripts, in whatever order, the invariants of a job hold (Hypothesis)."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from store_support import (
    BOOM,
    LEASE_MS,
    LEASING_EVENTS,
    Saga,
    of,
    step,
)

from sasfleet.shared.statemachine import JOB_TERMINAL, JobStatus

# --- property: whatever happens, in whatever order -------------------------------------------

NSTEPS = 3
# Mostly the step and lease a healthy fleet would use; sometimes stale or made-up ones.
STEP_CHOICE = st.sampled_from(["current", "current", "current", *range(2 * NSTEPS)])
LEASE_CHOICE = st.sampled_from(["current", "current", "current", "stale", 0, 1, 5])
DELAY = st.sampled_from([None, 0, 300, 4_000])
# A whole attempt (claim, record, advance), nearly always of the current dispatch.
ATTEMPT = st.tuples(
    st.just("attempt"),
    st.sampled_from(["current"] * 9 + [*range(2 * NSTEPS)]),
    st.sampled_from(["current"] * 9 + ["stale", 0, 5]),
    st.sampled_from(["ok", "ok", "ok", None, 0, 300]),
)
TICK = st.tuples(st.just("tick"), st.sampled_from([1, 300, 1_000, 2_000, 4_000, 30_000]))
OPERATION = st.one_of(
    *[ATTEMPT] * 6,
    TICK,
    st.tuples(st.just("claim"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("succeed"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("fail"), STEP_CHOICE, LEASE_CHOICE, DELAY),
    st.tuples(st.just("advance"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("renew"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("recover"), STEP_CHOICE),
    st.tuples(st.just("fire"), STEP_CHOICE),
    st.tuples(st.just("cancel")),
)
# How the healthy fleet's attempts end once it takes over (used in turn).
DRIVE = st.lists(st.sampled_from(["ok", "ok", "ok", "no_retry", "retry"]), min_size=1, max_size=8)


async def _resolve(saga: Saga, job_id: str, op: tuple[Any, ...]) -> tuple[int, int]:
    """The step and lease an operation names: "current" ones, or stale and made-up ones."""
    index = op[1]
    if index == "current":
        index = int(await saga.redis.hget(saga.store.keys.job(job_id), "current") or 0)
    choice = op[2] if len(op) > 2 else "current"
    current = await saga.lease(index, job_id)
    lease = {"current": current, "stale": current - 1}.get(choice, choice)
    return index, int(lease)


async def _apply(saga: Saga, job_id: str, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "tick":
        saga.clock.advance(op[1])
        return None
    if kind == "cancel":
        return await saga.cancel(job_id)
    index, lease = await _resolve(saga, job_id, op)
    if kind == "claim":
        return await saga.claim(index, lease, job_id=job_id, max_attempts=2)
    if kind == "succeed":
        return await saga.record(index, lease, job_id=job_id, result=b'"ok"')
    if kind == "fail":
        return await saga.record(index, lease, job_id=job_id, error=BOOM, retry_delay_ms=op[3])
    if kind == "advance":
        return await saga.advance(index, lease, job_id)
    if kind == "attempt":
        await saga.claim(index, lease, job_id=job_id, max_attempts=2)
        if op[3] == "ok":
            await saga.record(index, lease, job_id=job_id, result=b'"ok"')
        else:
            await saga.record(index, lease, job_id=job_id, error=BOOM, retry_delay_ms=op[3])
        return await saga.advance(index, lease, job_id)
    if kind == "renew":
        return await saga.store.renew(job_id, index, lease, LEASE_MS)
    if kind == "recover":
        return await saga.recover(index, job_id)
    return await saga.fire(index, job_id)


async def _check_invariants(saga: Saga, job_id: str, ended: str | None) -> str | None:
    """Asserts what the design guarantees; returns the job's terminal status, if any."""
    status = await saga.job_status(job_id)
    assert status in set(JobStatus)
    if ended is not None:
        assert status == ended, f"terminal {ended} moved to {status}"
    raw = await saga.redis.lrange(saga.store.keys.history(job_id), 0, -1)
    history = [json.loads(r) for r in raw]
    compensations = [h["step"] for h in history if h["event"] == "compensate"]
    assert all(n == 1 for n in Counter(compensations).values()), compensations
    undone = [i - NSTEPS for i in compensations]
    assert undone == sorted(undone, reverse=True), f"not in reverse order: {undone}"
    for i in undone:  # only steps that succeeded and named a compensation are undone
        forward = await saga.step(i, job_id)
        assert (forward["status"], forward["compensation"] != "") == ("succeeded", True)
    leases = [h["lease"] for h in history if h["event"] in LEASING_EVENTS]
    assert all(a < b for a, b in pairwise(leases)), leases
    return status if status in JOB_TERMINAL else None


async def _drive_to_the_end(saga: Saga, job_id: str, ended: str | None, outcomes: list[str]) -> str:
    """A healthy fleet takes over: every job must then reach a terminal state."""
    keys, seen = saga.store.keys, []
    for turn in range(60):
        if ended is not None:
            return ended
        index = int(await saga.redis.hget(keys.job(job_id), "current") or 0)
        s = await saga.step(index, job_id)
        lease, member = int(s["lease"]), f"{job_id}|{index}"
        seen.append((index, s["status"], lease))
        if s["status"] == "dispatched":  # an agent takes it and runs it
            outcome = outcomes[turn % len(outcomes)]
            assert await saga.claim(index, lease, job_id=job_id, max_attempts=2)
            if outcome == "ok":
                assert await saga.record(index, lease, job_id=job_id, result=b'"ok"')
            else:
                delay = 300 if outcome == "retry" else None
                assert await saga.record(
                    index, lease, job_id=job_id, error=BOOM, retry_delay_ms=delay
                )
            await saga.advance(index, lease, job_id)
        elif s["status"] == "running":  # its agent is gone: the supervisor steps in
            saga.clock.advance(LEASE_MS)
            await saga.recover(index, job_id)
        elif s["status"] in ("succeeded", "failed"):  # the scheduler takes up the outcome
            await saga.advance(index, lease, job_id)
        else:  # pending or waiting_retry: the scheduler fires its timer when due
            due = await saga.redis.zscore(keys.timers(keys.bucket_of(job_id)), member)
            assert due is not None, f"{s['status']} step {index} has no timer: it is lost"
            saga.clock.advance(max(0, int(due) - saga.clock.now_ms()))
            await saga.fire(index, job_id)
        ended = await _check_invariants(saga, job_id, ended)
    raise AssertionError(f"job {job_id} never ended: {seen}")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    delayed=st.booleans(),
    operations=st.lists(OPERATION, min_size=5, max_size=60),
    outcomes=DRIVE,
)
async def test_no_sequence_of_calls_breaks_the_invariants(
    saga: Saga, delayed: bool, operations: list[tuple[Any, ...]], outcomes: list[str]
) -> None:
    """Agents, schedulers, supervisors and clients calling in any order, with stale,
    duplicated and made-up steps and leases, while time jumps: a terminal job status is
    final, each forward step is compensated at most once (in reverse order, only if it
    succeeded and names a compensation), lease tokens handed out only grow; and once a
    healthy fleet takes over, the job ends."""
    job_id = f"p-{uuid4().hex[:10]}"  # a fresh job per example (same prefix, cleaned after)
    steps = [
        step(0, "undo0", max_attempts=2, timeout_ms=3_000, schedule_to_start_ms=1_000),
        step(1, "undo1", max_attempts=2, schedule_to_close_ms=8_000),
        step(2, max_attempts=2, schedule_to_start_ms=2_000),
    ]
    start_at = saga.clock.now_ms() + 1_000 if delayed else 0
    await saga.create(steps, job_id=job_id, start_at_ms=start_at)
    ended = await _check_invariants(saga, job_id, None)
    for op in operations:
        await _apply(saga, job_id, op)
        ended = await _check_invariants(saga, job_id, ended)
    event(f"ended {ended} under interference" if ended else "active after interference")
    ended = await _drive_to_the_end(saga, job_id, ended, outcomes)
    event(f"ended {ended}")
    history = (await saga.view(job_id)).history
    event("compensated some step" if of(history, "compensate") else "compensated nothing")
