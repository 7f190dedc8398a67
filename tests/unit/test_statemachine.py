"""The pure state machine: statuses, the table of legal moves, retry decisions and backoff."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sasfleet.shared.statemachine import (
    JOB_MOVES,
    JOB_TERMINAL,
    STEP_ACTIVE,
    STEP_MOVES,
    STEP_TERMINAL,
    JobStatus,
    Move,
    RetryPolicy,
    StepStatus,
    backoff_ms,
    job_sources,
    step_sources,
)

S = StepStatus


# --- statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [*StepStatus, *JobStatus])
def test_status_values_are_the_lowercase_names(status: StepStatus | JobStatus) -> None:
    assert status.value == status.name.lower()
    assert str(status) == status.value  # StrEnum: what goes into Redis and JSON


def test_step_status_enumeration_is_exactly_the_designed_six() -> None:
    assert {s.value for s in StepStatus} == {
        "pending",
        "dispatched",
        "running",
        "succeeded",
        "failed",
        "waiting_retry",
    }


def test_step_terminal_and_active_sets_are_disjoint_and_leave_only_pending_out() -> None:
    assert frozenset({S.SUCCEEDED, S.FAILED}) == STEP_TERMINAL
    assert frozenset({S.DISPATCHED, S.RUNNING, S.WAITING_RETRY}) == STEP_ACTIVE
    assert not STEP_TERMINAL & STEP_ACTIVE
    assert set(StepStatus) - STEP_TERMINAL - STEP_ACTIVE == {S.PENDING}


def test_job_terminal_set_holds_every_end_state_and_no_running_state() -> None:
    J = JobStatus
    assert (
        frozenset({J.SUCCEEDED, J.COMPENSATED, J.FAILED, J.CANCELLED, J.ESCALATED}) == JOB_TERMINAL
    )
    assert set(JobStatus) - JOB_TERMINAL == {J.PENDING, J.RUNNING, J.COMPENSATING}


# --- the table of legal moves ---------------------------------------------------------------


def test_every_named_move_has_a_row_in_the_step_table() -> None:
    assert set(STEP_MOVES) == set(Move)
    assert all(m.value == m.name.lower() for m in Move)  # history event names


def test_nothing_moves_out_of_succeeded() -> None:
    assert [m for m, (sources, _) in STEP_MOVES.items() if S.SUCCEEDED in sources] == []


def test_claim_moves_only_a_dispatched_step_to_running() -> None:
    assert STEP_MOVES[Move.CLAIM] == (frozenset({S.DISPATCHED}), S.RUNNING)


def test_the_only_way_out_of_failed_is_waiting_for_a_retry() -> None:
    assert [m for m, (sources, _) in STEP_MOVES.items() if S.FAILED in sources] == [
        Move.RETRY_LATER
    ]
    assert STEP_MOVES[Move.RETRY_LATER][1] == S.WAITING_RETRY


@pytest.mark.parametrize(
    ("move", "sources", "target"),
    [
        (Move.DISPATCH, {S.PENDING}, S.DISPATCHED),
        (Move.SUCCEED, {S.RUNNING}, S.SUCCEEDED),
        (Move.FAIL, {S.RUNNING, S.DISPATCHED}, S.FAILED),
        (Move.RETRY, {S.WAITING_RETRY}, S.DISPATCHED),
        (Move.REDISPATCH, {S.DISPATCHED, S.RUNNING}, S.DISPATCHED),
        (Move.TIMEOUT_FAIL, {S.DISPATCHED, S.RUNNING}, S.FAILED),
    ],
)
def test_step_table_rows_match_the_design(
    move: Move, sources: set[StepStatus], target: StepStatus
) -> None:
    assert STEP_MOVES[move] == (frozenset(sources), target)
    assert step_sources(move) == frozenset(sources)


def test_a_waiting_retry_is_fired_by_its_timer_not_by_the_supervisor() -> None:
    assert S.WAITING_RETRY not in step_sources(Move.TIMEOUT_FAIL)
    assert S.WAITING_RETRY not in step_sources(Move.REDISPATCH)
    assert step_sources(Move.RETRY) == {S.WAITING_RETRY}


def test_every_step_status_but_pending_is_reachable_and_only_succeeded_is_a_dead_end() -> None:
    targets = {target for _, target in STEP_MOVES.values()}
    sources = set().union(*(s for s, _ in STEP_MOVES.values()))
    assert set(StepStatus) - targets == {S.PENDING}
    assert set(StepStatus) - sources == {S.SUCCEEDED}


def test_job_moves_start_finish_and_never_leave_a_terminal_state() -> None:
    J = JobStatus
    assert job_sources("start") == {J.PENDING}
    assert JOB_MOVES["succeed"] == (frozenset({J.RUNNING}), J.SUCCEEDED)
    assert JOB_MOVES["fail"] == (frozenset({J.PENDING, J.RUNNING}), J.FAILED)
    for sources, _target in JOB_MOVES.values():
        assert not sources & JOB_TERMINAL


# --- retry decisions and backoff ------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "retryable", "expected"),
    [(1, True, True), (2, True, True), (3, True, False), (4, True, False), (1, False, False)],
)
def test_should_retry_only_retryable_failures_with_attempts_left(
    attempt: int, retryable: bool, expected: bool
) -> None:
    assert RetryPolicy(max_attempts=3).should_retry(attempt, retryable) is expected


def test_a_single_attempt_policy_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).should_retry(1, True) is False


def test_default_delays_double_from_half_a_second_and_cap_at_thirty_seconds() -> None:
    policy = RetryPolicy()
    assert [policy.delay_ms(a) for a in range(1, 9)] == [
        500,
        1000,
        2000,
        4000,
        8000,
        16000,
        30000,
        30000,
    ]


def test_delay_ms_uses_the_policy_parameters() -> None:
    policy = RetryPolicy(initial_ms=100, coefficient=3.0, max_ms=1_000)
    assert [policy.delay_ms(a) for a in (1, 2, 3, 4)] == [100, 300, 900, 1000]


def test_backoff_returns_whole_milliseconds() -> None:
    value = backoff_ms(2, 333, 1.5, 10_000)
    assert value == 499 and isinstance(value, int)


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="count from 1"):
        backoff_ms(attempt, 500, 2.0, 30_000)
    with pytest.raises(ValueError):
        RetryPolicy().delay_ms(attempt)


def test_a_huge_attempt_number_gets_the_capped_delay() -> None:
    assert backoff_ms(1_100, 500, 2.0, 30_000) == 30_000


@given(
    attempt=st.integers(min_value=1, max_value=100),
    initial_ms=st.integers(min_value=0, max_value=10**6),
    coefficient=st.floats(min_value=1.0, max_value=10.0),
    max_ms=st.integers(min_value=0, max_value=10**7),
)
def test_backoff_never_shrinks_and_never_exceeds_the_cap(
    attempt: int, initial_ms: int, coefficient: float, max_ms: int
) -> None:
    now = backoff_ms(attempt, initial_ms, coefficient, max_ms)
    later = backoff_ms(attempt + 1, initial_ms, coefficient, max_ms)
    assert 0 <= now <= later <= max_ms
    assert backoff_ms(1, initial_ms, coefficient, max_ms) == min(initial_ms, max_ms)
