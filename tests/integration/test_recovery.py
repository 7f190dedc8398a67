"""Retries and recovery: failing handlers, a SIGKILLed agent, racing supervisors."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from sasfleet.shared.state.views import HistoryEntry

pytestmark = pytest.mark.integration


def events(history: list[HistoryEntry], event: str, **match: object) -> list[HistoryEntry]:
    return [h for h in history if h.event == event
            and all(getattr(h, k) == v for k, v in match.items())]


def written_by(entry: HistoryEntry, role: str, pid: int) -> bool:
    return entry.by.startswith(f"{role}-") and f"-{pid}-" in entry.by


async def test_failing_handler_is_retried_until_attempts_run_out(services, client):
    job_id = await client.submit("fail", {"message": "boom"}, max_attempts=2)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("RuntimeError", "boom")
    view = await client.get(job_id)
    assert view is not None and view.status == "failed"
    step, = view.steps
    assert (step.status, step.attempt, step.max_attempts) == ("failed", 2, 2)
    assert step.error["type"] == "RuntimeError"
    h = view.history
    fail_1, = events(h, "fail", step=0, attempt=1)
    retry, = events(h, "retry_later", step=0)
    redispatch, = events(h, "redispatch", step=0)
    claim_2, = events(h, "claim", step=0, attempt=2)
    fail_2, = events(h, "fail", step=0, attempt=2)
    job_fail, = events(h, "fail", step=None)
    sequence = [fail_1, retry, redispatch, claim_2, fail_2, job_fail]
    assert [h.index(e) for e in sequence] == sorted(h.index(e) for e in sequence)
    assert retry.attempt == 1 and retry.status == "waiting_retry"
    assert written_by(retry, "scheduler", services.scheduler.pid)
    assert redispatch.attempt == 2 and redispatch.previous == "waiting_retry"
    assert written_by(redispatch, "supervisor", services.supervisor.pid)
    assert redispatch.lease > fail_1.lease
    assert claim_2.lease == fail_2.lease == redispatch.lease
    assert job_fail.status == "failed"
    assert not events(h, "redispatch", step=0, attempt=3)


async def test_non_retryable_failure_fails_the_job_after_one_attempt(services, client):
    job_id = await client.submit("fail", {"message": "no", "retryable": False}, max_attempts=3)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "NonRetryableError"
    view = await client.get(job_id)
    assert view is not None
    assert view.steps[0].attempt == 1
    assert not events(view.history, "retry_later")


async def test_step_of_a_sigkilled_agent_is_redispatched_and_succeeds(
    fleet, services, client, jobs
):
    job_id = await client.submit("sleep", {"seconds": 3})
    first = await jobs.until(job_id, lambda v: v.steps[0].status == "running", timeout=15,
                             what="step 0 running")
    killed = services.agent
    assert first.steps[0].locked_by is not None and f"-{killed.pid}-" in first.steps[0].locked_by

    killed.kill()
    replacement = fleet.agent("examples.tasks", concurrency=4)

    outcome = await client.wait(job_id, timeout=30)
    assert outcome.status == "succeeded"
    assert outcome.result == {"slept": 3}
    view = await client.get(job_id)
    assert view is not None and view.status == "succeeded"
    h = view.history
    claim_1, = events(h, "claim", step=0, attempt=1)
    redispatch, = events(h, "redispatch", step=0)
    claim_2, = events(h, "claim", step=0, attempt=2)
    succeed, = events(h, "succeed", step=0)
    assert written_by(claim_1, "agent-default", killed.pid)
    assert redispatch.by.startswith("supervisor-")
    assert written_by(redispatch, "supervisor", services.supervisor.pid)
    assert redispatch.attempt == 2
    assert redispatch.previous == "running"
    assert "lease expired" in (redispatch.detail or "")
    assert claim_1.by in (redispatch.detail or "")  # names the dead agent
    assert written_by(claim_2, "agent-default", replacement.pid)
    assert claim_2.lease == redispatch.lease > claim_1.lease
    assert (succeed.attempt, succeed.lease) == (2, claim_2.lease)
    assert written_by(succeed, "agent-default", replacement.pid)
    assert h.index(claim_1) < h.index(redispatch) < h.index(claim_2) < h.index(succeed)
    assert (view.steps[0].attempt, view.steps[0].lease) == (2, claim_2.lease)
    assert not events(h, "fail", step=0)


async def test_racing_supervisors_recover_each_overdue_attempt_once(
    fleet, start_services, client, jobs
):
    # Two supervisors scan the same deadlines; one agent runs every step.
    scheduler, supervisor_a, supervisor_b, agent = start_services(
        ("scheduler", ()),
        ("supervisor", ()),
        ("supervisor", ()),
        ("agent", ("examples.tasks", "--concurrency", "25")),
    )
    n = 20
    job_ids = await asyncio.gather(*(client.submit("sleep", {"seconds": 3}) for _ in range(n)))
    await asyncio.gather(*(
        jobs.until(j, lambda v: v.steps[0].status == "running", timeout=20, what="running")
        for j in job_ids))

    agent.kill()  # 20 running steps whose leases will expire together
    fleet.agent("examples.tasks", concurrency=25)

    outcomes = await asyncio.gather(*(client.wait(j, timeout=40) for j in job_ids))
    assert [o.status for o in outcomes] == ["succeeded"] * n
    supervisors = {supervisor_a.pid, supervisor_b.pid}
    recovered_by: Counter[int] = Counter()
    for job_id in job_ids:
        view = await client.get(job_id)
        assert view is not None and view.status == "succeeded"
        redispatches = events(view.history, "redispatch")
        per_attempt = Counter(e.attempt for e in redispatches)
        assert per_attempt and all(c == 1 for c in per_attempt.values()), (
            job_id, [(e.attempt, e.lease, e.by) for e in redispatches])
        assert sorted(per_attempt) == list(range(2, 2 + len(per_attempt)))
        leases = [e.lease for e in redispatches]
        assert len(set(leases)) == len(leases)
        for e in redispatches:
            pid = next((p for p in supervisors if written_by(e, "supervisor", p)), None)
            assert pid is not None, e
            recovered_by[pid] += 1
        assert len(events(view.history, "succeed", step=0)) == 1
    assert scheduler.alive() and supervisor_a.alive() and supervisor_b.alive()
    print(f"redispatches by supervisor pid: {dict(recovered_by)}")
