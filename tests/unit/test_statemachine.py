"""The pure state machine: statuses, the tables of legal moves, the failure vocabulary and
the resolution of a step's retry policy (the backoff itself is Lua: tests/store)."""

from __future__ import annotations

import pytest

from sasfleet.shared.messages.submit import RetrySpec
from sasfleet.shared.statemachine import (
    JOB_MOVES,
    JOB_TERMINAL,
    STEP_ACTIVE,
    STEP_MOVES,
    STEP_TERMINAL,
    Failure,
    FailureKind,
    JobMove,
    JobStatus,
    Move,
    RetryPolicy,
    StepStatus,
    job_sources,
    resolve_policy,
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
        (Move.FAIL, {S.RUNNING}, S.FAILED),
        (Move.RETRY, {S.WAITING_RETRY}, S.DISPATCHED),
        (Move.RELEASE, {S.RUNNING}, S.DISPATCHED),
        (Move.TIMEOUT_FAIL, {S.DISPATCHED, S.RUNNING, S.WAITING_RETRY}, S.FAILED),
        (Move.CANCEL, {S.PENDING, S.DISPATCHED, S.WAITING_RETRY}, S.FAILED),
    ],
)
def test_step_table_rows_match_the_design(
    move: Move, sources: set[StepStatus], target: StepStatus
) -> None:
    assert STEP_MOVES[move] == (frozenset(sources), target)
    assert step_sources(move) == frozenset(sources)


def test_a_timed_out_step_fails_and_is_retried_through_its_backoff_timer() -> None:
    # No move takes a step from an expired attempt straight to a new one: the supervisor
    # fails it, and the retry (if any) waits like any other failure's.
    assert not [
        m for m, (src, to) in STEP_MOVES.items() if to == S.DISPATCHED and S.DISPATCHED in src
    ]
    assert step_sources(Move.RETRY) == {S.WAITING_RETRY}


def test_every_step_status_but_pending_is_reachable_and_only_succeeded_is_a_dead_end() -> None:
    targets = {target for _, target in STEP_MOVES.values()}
    sources = set().union(*(s for s, _ in STEP_MOVES.values()))
    assert set(StepStatus) - targets == {S.PENDING}
    assert set(StepStatus) - sources == {S.SUCCEEDED}


def test_job_moves_start_finish_and_never_leave_a_terminal_state() -> None:
    J = JobStatus
    assert job_sources(JobMove.START) == {J.PENDING}
    assert JOB_MOVES[JobMove.SUCCEED] == (frozenset({J.RUNNING}), J.SUCCEEDED)
    assert JOB_MOVES[JobMove.FAIL] == (frozenset({J.RUNNING}), J.FAILED)
    assert JOB_MOVES[JobMove.CANCEL][0] == {J.PENDING, J.RUNNING, J.COMPENSATING}
    for sources, _target in JOB_MOVES.values():
        assert not sources & JOB_TERMINAL
    assert {to for _, to in JOB_MOVES.values()} == set(JobStatus) - {J.PENDING}


# --- the failure vocabulary -----------------------------------------------------------------


def test_every_failure_has_a_snake_case_label_and_a_kind() -> None:
    labels = [f.label for f in Failure]
    assert len(set(labels)) == len(labels)
    for f in Failure:
        assert f.label == f.label.lower() and " " not in f.label
        assert isinstance(f.kind, FailureKind)
        assert Failure.of(f.value) is f
    assert Failure.of("ValueError") is None  # a handler's own exception


def test_timeouts_are_the_failures_named_so_and_only_the_overall_limit_is_final() -> None:
    timeouts = {f for f in Failure if f.is_timeout}
    assert {f.value for f in timeouts} == {f.value for f in Failure if f.value.endswith("Timeout")}
    assert {f for f in timeouts if not f.retryable} == {Failure.SCHEDULE_TO_CLOSE_TIMEOUT}
    assert Failure.LEASE_EXPIRED.retryable and Failure.LEASE_EXPIRED.kind is FailureKind.LOSS
    assert {f for f in Failure if f.kind is FailureKind.BAD_INPUT and f.retryable} == set()


# --- resolving a step's retry policy ----------------------------------------------------------


def test_each_layer_sets_only_what_it_names() -> None:
    fleet = RetryPolicy(max_attempts=3, initial_ms=500, coefficient=2.0, max_ms=30_000)
    task = (5, RetrySpec(initial_interval_s=1, jitter=0.1))
    step = (None, RetrySpec(max_interval_s=2, non_retryable_errors=["Declined"]))
    assert resolve_policy(fleet, task, step) == RetryPolicy(
        max_attempts=5,
        initial_ms=1000,
        coefficient=2.0,
        max_ms=2000,
        jitter=0.1,
        non_retryable=["Declined"],
    )


def test_the_step_wins_over_its_task_and_nothing_given_keeps_the_fleet_policy() -> None:
    fleet = RetryPolicy()
    assert resolve_policy(fleet, (None, None), (None, None)) is fleet
    assert resolve_policy(fleet, (5, None), (2, None)).max_attempts == 2
    spec = RetrySpec(backoff_coefficient=3)
    assert (
        resolve_policy(fleet, (None, RetrySpec(backoff_coefficient=1.5)), (None, spec)).coefficient
        == 3
    )
