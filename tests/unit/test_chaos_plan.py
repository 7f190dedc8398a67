"""The chaos suite's own logic: its plans, its bad messages and its checker (which must
catch a broken run, not only pass a good one)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import msgspec
import pytest

from sasfleet.shared.messages.codec import encode, submit_decoder
from sasfleet.shared.state.views import HistoryEntry, JobView, StepView
from sasfleet.tools.chaos_check import Records, check_job, verify
from sasfleet.tools.chaos_faults import dead_letters_it, garbage_bodies
from sasfleet.tools.chaos_workload import (
    FAULT_KINDS,
    PlannedJob,
    plan_faults,
    plan_jobs,
)


def test_the_job_plan_is_seeded_and_mixes_every_outcome() -> None:
    plan = plan_jobs("p", 2000, seed=3)
    assert plan == plan_jobs("p", 2000, seed=3)
    assert len({j.job_id for j in plan}) == 2000
    outcomes = Counter((j.nsteps, j.expected_status) for j in plan)
    assert set(outcomes) == {
        (1, "succeeded"),
        (1, "failed"),
        (3, "succeeded"),
        (3, "compensated"),
    }
    assert any(any(j.flaky) for j in plan)
    for job in plan[:200]:  # each one is a valid submission
        decoded = submit_decoder.decode(encode(job.submission("p:chaos")))
        assert decoded.job_id == job.job_id
        assert [s.task for s in decoded.step_specs()] == ["chaos_step"] * job.nsteps


@pytest.mark.parametrize("count", [7, 22, 40])
def test_the_fault_plan_has_every_kind(count: int) -> None:
    plan = plan_faults(count, seed=1)
    assert len(plan) == count
    assert set(plan) == set(FAULT_KINDS)
    assert Counter(plan)["agent-kill"] == max(Counter(plan).values())


@pytest.mark.parametrize("queue_kind", ["submit", "events", "pool"])
def test_garbage_is_what_the_services_must_dead_letter(queue_kind: str) -> None:
    rng = random.Random(5)
    for _ in range(50):
        bodies = garbage_bodies(rng, queue_kind)
        assert len(bodies) == 5
        assert all(dead_letters_it(queue_kind, b) for b in bodies)


def test_the_classifier_accepts_valid_messages() -> None:
    valid = {
        "submit": {"task": "echo", "payload": {"x": 1}},
        "events": {
            "kind": "step_recorded",
            "job_id": "j",
            "step": 0,
            "attempt": 1,
            "lease": 1,
            "by": "x",
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
    for kind, doc in valid.items():
        assert not dead_letters_it(kind, msgspec.json.encode(doc)), kind


# --------------------------------------------------------------------------- the checker

SAGA = PlannedJob(job_id="p-j00001", n=1, nsteps=3, fail_at=2, flaky=(0, 0, 0), work_s=(0, 0, 0))


def h(ts: int, event: str, step: int | None = None, lease: int | None = None, **kw: Any) -> Any:
    return HistoryEntry(ts=ts, by="agent-x", event=event, step=step, lease=lease, **kw)


def step_view(index: int, status: str, lease: int, **kw: Any) -> StepView:
    return StepView(
        index=index,
        task="chaos_step",
        pool="default",
        status=status,
        attempt=1,
        max_attempts=30,
        lease=lease,
        timeout_s=1,
        **kw,
    )


def saga_view(**changes: Any) -> JobView:
    """SAGA as a correct run leaves it: steps 0 and 1 succeed (step 0 on its second
    lease, after a stale first attempt), step 2 fails, both are compensated."""
    job = SAGA
    steps = [
        step_view(0, "succeeded", 2, result={"n": 1, "step": 0, "acc": job.acc(0)}),
        step_view(1, "succeeded", 3, result={"n": 1, "step": 1, "acc": job.acc(1)}),
        step_view(2, "failed", 4),
        step_view(4, "succeeded", 5, compensates=1),
        step_view(3, "succeeded", 6, compensates=0),
    ]
    history = [
        h(1, "stale_result_rejected", 0, 1),
        h(2, "succeed", 0, 2),
        h(3, "succeed", 1, 3),
        h(4, "fail", 2, 4),
        h(5, "succeed", 4, 5),
        h(6, "succeed", 3, 6),
        h(7, "compensated", status="compensated"),
    ]
    doc: dict[str, Any] = {
        "job_id": job.job_id,
        "status": "compensated",
        "created_at": 0,
        "updated_at": 7,
        "steps": steps,
        "history": history,
    }
    doc.update(changes)
    return JobView(**doc)


def records(**changes: dict[str, str]) -> Records:
    effects = {f"{SAGA.job_id}:0": f"2|{SAGA.acc(0)}", f"{SAGA.job_id}:1": f"3|{SAGA.acc(1)}"}
    undone = {f"{SAGA.job_id}:1": f"5|{SAGA.acc(1)}", f"{SAGA.job_id}:0": f"6|{SAGA.acc(0)}"}
    base = {"effects": effects, "undone": undone, "refused": {}}
    base.update(changes)
    return Records(executions=set(), **base)


def test_the_checker_passes_a_correct_saga() -> None:
    assert check_job(SAGA, saga_view(), records()) == []


def test_the_checker_catches_an_effect_of_a_stale_lease() -> None:
    stale = {f"{SAGA.job_id}:0": f"1|{SAGA.acc(0)}", f"{SAGA.job_id}:1": f"3|{SAGA.acc(1)}"}
    (problem,) = check_job(SAGA, saga_view(), records(effects=stale))
    assert "stale commit" in problem


def test_the_checker_catches_a_second_terminal_state() -> None:
    view = saga_view()
    twice = saga_view(history=[*view.history, h(8, "failed", status="failed")])
    assert any("2 terminal events" in p for p in check_job(SAGA, twice, records()))


def test_the_checker_catches_a_compensation_run_twice() -> None:
    view = saga_view()
    again = saga_view(history=[*view.history[:-1], h(6, "succeed", 3, 7), view.history[-1]])
    assert any("succeeded 2 times" in p for p in check_job(SAGA, again, records()))


def test_the_checker_catches_a_missing_compensation_and_a_wrong_end() -> None:
    view = saga_view(status="failed", steps=saga_view().steps[:4])
    problems = check_job(SAGA, view, records())
    assert any("expected compensated" in p for p in problems)
    assert any("step 0 not compensated" in p for p in problems)


def test_verify_counts_lost_jobs_and_duplicates() -> None:
    other = PlannedJob(job_id="p-j00002", n=2, nsteps=1, fail_at=None, flaky=(1,), work_s=(0,))
    executions = {
        f"{SAGA.job_id}:0|1|1|step|a",
        f"{SAGA.job_id}:0|2|2|step|b",  # a duplicate (a fault)
        f"{SAGA.job_id}:1|3|1|step|b",
        f"{SAGA.job_id}:2|4|1|step|b",
        f"{other.job_id}:0|1|1|step|a",
        f"{other.job_id}:0|2|2|step|a",  # planned: the step flakes once
    }
    rec = records()
    rec.executions = executions
    verdict = verify([SAGA, other], {SAGA.job_id: saga_view(), other.job_id: None}, rec)
    assert verdict.lost == [other.job_id]
    assert verdict.violations == []
    assert (verdict.duplicated_executions, verdict.planned_retries) == (1, 1)
    assert verdict.stale_results_rejected == 1
