"""Whatever sequence of calls (claims, outcomes, recoveries, timers, cancels, releases, stale
leases) reaches the state scripts, in whatever order, the invariants of a job hold
(Hypothesis)."""

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
    DECLINED,
    LEASE_MS,
    LEASING_EVENTS,
    Saga,
    step,
)

from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.state.records import Finished
from sasfleet.shared.statemachine import JOB_TERMINAL, JobStatus, StepStatus

# --- property: whatever happens, in whatever order -------------------------------------------

NSTEPS = 3
# Mostly the step and lease a healthy fleet would use; sometimes stale or made-up ones.
STEP_CHOICE = st.sampled_from(["current", "current", "current", *range(2 * NSTEPS)])
LEASE_CHOICE = st.sampled_from(["current", "current", "current", "stale", 0, 1, 5])
# A handler's own retry request (None: the policy's backoff decides).
RETRY_AFTER = st.sampled_from([None, None, 0, 300, 4_000])
# A whole attempt (claim, record, advance), nearly always of the current dispatch; "ok+"
# is the agent's fast path (the record follows a success itself).
ATTEMPT = st.tuples(
    st.just("attempt"),
    st.sampled_from(["current"] * 9 + [*range(2 * NSTEPS)]),
    st.sampled_from(["current"] * 9 + ["stale", 0, 5]),
    st.sampled_from(["ok", "ok", "ok+", "ok+", "declined", None, 0, 300]),
)
TICK = st.tuples(st.just("tick"), st.sampled_from([1, 300, 1_000, 2_000, 4_000, 30_000]))
OPERATION = st.one_of(
    *[ATTEMPT] * 6,
    TICK,
    st.tuples(st.just("claim"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("succeed"), STEP_CHOICE, LEASE_CHOICE, st.booleans()),
    st.tuples(st.just("fail"), STEP_CHOICE, LEASE_CHOICE, RETRY_AFTER),
    st.tuples(st.just("advance"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("settle"), STEP_CHOICE),
    st.tuples(st.just("renew"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("release"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("recover"), STEP_CHOICE),
    st.tuples(st.just("fire"), STEP_CHOICE),
    st.tuples(st.just("expire_agent")),
    st.tuples(st.just("cancel")),
)
# How the healthy fleet's attempts end once it takes over (used in turn).
DRIVE = st.lists(
    st.sampled_from(["ok", "ok", "ok+", "no_retry", "retry", "backoff"]), min_size=1, max_size=8
)


async def _resolve(saga: Saga, job_id: str, op: tuple[Any, ...]) -> tuple[int, int]:
    """The step and lease an operation names: "current" ones, or stale and made-up ones."""
    index = op[1]
    if index == "current":
        index = int(await saga.redis.hget(saga.store.keys.job(job_id), "current") or 0)
    choice = op[2] if len(op) > 2 else "current"
    current = await saga.lease(index, job_id)
    lease = {"current": current, "stale": current - 1}.get(choice, choice)
    return index, int(lease)


async def _outcome(saga: Saga, job_id: str, index: int, lease: int, outcome: Any) -> Any:
    """Record ``outcome`` ("ok", "ok+", "declined", or a failure with that retry request)
    and, unless the record followed it itself, advance."""
    if outcome in ("ok", "ok+"):
        answer = await saga.record(
            index, lease, job_id=job_id, result=b'"ok"', advance=outcome == "ok+"
        )
        if isinstance(answer, DispatchOrder):  # the agent publishes it, then settles
            await saga.store.settle(job_id, index)
            return answer
        if isinstance(answer, Finished):
            return answer
    elif outcome == "declined":
        await saga.record(index, lease, job_id=job_id, error=DECLINED)
    else:
        await saga.record(index, lease, job_id=job_id, error=BOOM, retry_after_ms=outcome)
    return await saga.advance(index, lease, job_id)


async def _apply(saga: Saga, job_id: str, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "tick":
        saga.clock.advance(op[1])
        return None
    if kind == "cancel":
        return await saga.cancel(job_id)
    if kind == "expire_agent":
        return await saga.store.expire_agent("agent-a")
    index, lease = await _resolve(saga, job_id, op)
    if kind == "claim":
        return await saga.claim(index, lease, job_id=job_id)
    if kind == "succeed":
        return await saga.record(index, lease, job_id=job_id, result=b'"ok"', advance=op[3])
    if kind == "fail":
        return await saga.record(index, lease, job_id=job_id, error=BOOM, retry_after_ms=op[3])
    if kind == "advance":
        return await saga.advance(index, lease, job_id)
    if kind == "settle":
        return await saga.store.settle(job_id, index)
    if kind == "attempt":
        await saga.claim(index, lease, job_id=job_id)
        return await _outcome(saga, job_id, index, lease, op[3])
    if kind == "renew":
        return await saga.store.renew(job_id, index, lease)
    if kind == "release":
        return await saga.store.release(job_id, index, lease, "agent-a")
    if kind == "recover":
        return await saga.recover(index, job_id)
    return await saga.fire(index, job_id)


async def _check_invariants(saga: Saga, job_id: str, ended: str | None) -> str | None:
    """Asserts what the design guarantees; returns the job's terminal status, if any."""
    keys = saga.store.keys
    job = await saga.redis.hgetall(keys.job(job_id))
    status = job["status"]
    assert status in set(JobStatus)
    if ended is not None:
        assert status == ended, f"terminal {ended} moved to {status}"
    raw = await saga.redis.lrange(keys.history(job_id), 0, -1)
    history = [json.loads(r) for r in raw]
    # A compensation is dispatched (its attempt 1) once, in reverse order of the steps...
    compensations = [h["step"] for h in history if h["event"] == "dispatch" and h["step"] >= NSTEPS]
    assert all(n == 1 for n in Counter(compensations).values()), compensations
    undone = [i - NSTEPS for i in compensations]
    assert undone == sorted(undone, reverse=True), f"not in reverse order: {undone}"
    for i in undone:  # ...and only for a step that succeeded and names a compensation
        forward = await saga.step(i, job_id)
        assert forward["status"] == "succeeded" and forward.get("compensation"), forward
    leases = [h["lease"] for h in history if h["event"] in LEASING_EVENTS]
    assert all(a < b for a, b in pairwise(leases)), leases
    for h in history:  # a lost attempt is failed and retried, never handed out anew
        assert h["event"] != "redispatch", h
    if status in JOB_TERMINAL:
        return status
    # Nothing is lost: the job's current step is always someone's to take up.
    index = int(job["current"])
    s = await saga.step(index, job_id)
    deadline, timer = await saga.deadline(index, job_id), await saga.timer(index, job_id)
    if s["status"] in (StepStatus.WAITING_RETRY, StepStatus.PENDING):  # or a delayed start
        assert timer is not None, f"{status} job's step {index} ({s['status']}) has no timer"
    else:  # dispatched, running, or an outcome recorded and not yet followed
        assert deadline is not None, f"{s['status']} step {index} has no deadline"
    return None


async def _drive_to_the_end(saga: Saga, job_id: str, ended: str | None, outcomes: list[str]) -> str:
    """A healthy fleet takes over: every job must then reach a terminal state."""
    keys, seen = saga.store.keys, []
    for turn in range(60):
        if ended is not None:
            return ended
        index = int(await saga.redis.hget(keys.job(job_id), "current") or 0)
        s = await saga.step(index, job_id)
        lease = int(s["lease"])
        seen.append((index, s["status"], lease))
        if s["status"] == "dispatched":  # an agent takes it and runs it
            outcome = outcomes[turn % len(outcomes)]
            assert await saga.claim(index, lease, job_id=job_id)
            what = {"no_retry": "declined", "retry": 300, "backoff": None}.get(outcome, outcome)
            await _outcome(saga, job_id, index, lease, what)
        elif s["status"] == "running":  # its agent is gone: the supervisor steps in
            saga.clock.advance(LEASE_MS)
            assert await saga.recover(index, job_id) is not None, f"running step {index} lost"
        elif s["status"] in ("succeeded", "failed"):  # the scheduler takes up the outcome
            await saga.advance(index, lease, job_id)
        else:  # pending or waiting_retry: the scheduler fires its timer when due
            due = await saga.timer(index, job_id)
            assert due is not None, f"{s['status']} step {index} has no timer: it is lost"
            saga.clock.advance(max(0, int(due) - saga.clock.now_ms()))
            assert await saga.fire(index, job_id) is not None
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
    succeeded and names a compensation), lease tokens handed out only grow, a timed-out
    attempt is failed and retried through its backoff, the current step always has a
    deadline or a timer; and once a healthy fleet takes over, the job ends."""
    job_id = f"p-{uuid4().hex[:10]}"  # a fresh job per example (same prefix, cleaned after)
    steps = [
        step(0, "undo0", max_attempts=2, timeout_s=3, schedule_to_start_s=1),
        step(1, "undo1", max_attempts=2, schedule_to_close_s=8),
        step(2, max_attempts=2, schedule_to_start_s=2),
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
    history = [h.event for h in (await saga.view(job_id)).history]
    event("compensated some step" if "compensating" in history else "compensated nothing")
    event("a deadline failed some attempt" if "timeout_fail" in history else "no timeout")
