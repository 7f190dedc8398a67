"""Retries and recovery: failing handlers, a SIGKILLed agent, racing supervisors.

A step whose agent is lost (killed, hung) fails at its lease's deadline like any failure:
the supervisor records ``timeout_fail`` (``LeaseExpired``) and follows it at once with the
step's backoff (``retry_later``); a scheduler's timer then dispatches the next attempt
under a new lease (``retry``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from history_support import events, job_end, timed_out_and_retried, written_by

from sasfleet.shared.amqp.consumer import Ack, Delivery
from sasfleet.shared.amqp.topology import Names, Topology, queue_arguments
from sasfleet.shared.connections import connected
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.submit import StepSpec
from sasfleet.shared.state.records import Stale
from sasfleet.shared.state.store import StateStore, StoreTimings
from sasfleet.shared.statemachine import JOB_TERMINAL, resolve_policy
from sasfleet.tools.purge import purge_fleet


async def test_failing_handler_is_retried_until_attempts_run_out(services, client):
    job_id = await client.submit("fail", {"message": "boom"}, max_attempts=2)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("RuntimeError", "boom")
    view = await client.get(job_id)
    assert view is not None and view.status == "failed"
    (step,) = view.steps
    assert (step.status, step.attempt, step.max_attempts) == ("failed", 2, 2)
    assert step.error["type"] == "RuntimeError"
    h = view.history
    (fail_1,) = events(h, "fail", step=0, attempt=1)
    (retry,) = events(h, "retry_later", step=0)
    # The due retry timer dispatches attempt 2 (fired by a scheduler).
    (again,) = events(h, "retry", step=0)
    (claim_2,) = events(h, "claim", step=0, attempt=2)
    (fail_2,) = events(h, "fail", step=0, attempt=2)
    (job_fail,) = job_end(h)
    sequence = [fail_1, retry, again, claim_2, fail_2, job_fail]
    assert [h.index(e) for e in sequence] == sorted(h.index(e) for e in sequence)
    assert retry.attempt == 1 and retry.status == "waiting_retry"
    assert written_by(retry, "scheduler", services.scheduler.pid)
    assert again.attempt == 2 and again.previous == "waiting_retry"
    assert again.status == "dispatched"
    assert written_by(again, "scheduler", services.scheduler.pid), again
    assert again.lease > fail_1.lease
    assert claim_2.lease == fail_2.lease == again.lease
    assert job_fail.status == "failed"
    assert written_by(job_fail, "scheduler", services.scheduler.pid)
    assert not [e for e in h if e.attempt == 3]


async def test_non_retryable_failure_fails_the_job_after_one_attempt(services, client):
    job_id = await client.submit("fail", {"message": "no", "retryable": False}, max_attempts=3)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "NonRetryableError"
    view = await client.get(job_id)
    assert view is not None
    assert view.steps[0].attempt == 1
    assert not events(view.history, "retry_later")


async def test_step_of_a_sigkilled_agent_runs_again_under_a_new_lease_and_succeeds(
    fleet, services, client, jobs
):
    job_id = await client.submit("sleep", {"seconds": 3})
    first = await jobs.until(
        job_id, lambda v: v.steps[0].status == "running", timeout=15, what="step 0 running"
    )
    killed = services.agent
    assert first.steps[0].locked_by is not None and f"-{killed.pid}-" in first.steps[0].locked_by

    killed.kill()
    replacement = fleet.agent("sasfleet.examples.tasks", concurrency=4)

    outcome = await client.wait(job_id, timeout=30)
    assert outcome.status == "succeeded"
    assert outcome.result == {"slept": 3}
    view = await client.get(job_id)
    assert view is not None and view.status == "succeeded"
    h = view.history
    (claim_1,) = events(h, "claim", step=0, attempt=1)
    # The supervisor failed attempt 1 (its agent is gone), followed that failure with the
    # step's backoff, and a scheduler's timer dispatched attempt 2 under a new lease.
    timeout, wait, retry = timed_out_and_retried(h, 0, 1)
    (claim_2,) = events(h, "claim", step=0, attempt=2)
    (succeed,) = events(h, "succeed", step=0)
    assert written_by(claim_1, "agent-default", killed.pid)
    assert written_by(timeout, "supervisor", services.supervisor.pid)
    assert written_by(wait, "supervisor", services.supervisor.pid)
    assert (timeout.lease, timeout.previous) == (claim_1.lease, "running")
    assert (timeout.detail or "").startswith("LeaseExpired: attempt 1: lease expired"), timeout
    assert claim_1.by in (timeout.detail or "")  # names the dead agent
    assert written_by(retry, "scheduler", services.scheduler.pid)
    assert written_by(claim_2, "agent-default", replacement.pid)
    assert claim_2.lease == retry.lease > claim_1.lease
    assert (succeed.attempt, succeed.lease) == (2, claim_2.lease)
    assert written_by(succeed, "agent-default", replacement.pid)
    assert h.index(claim_1) < h.index(timeout) < h.index(claim_2) < h.index(succeed)
    assert (view.steps[0].attempt, view.steps[0].lease) == (2, claim_2.lease)
    assert not events(h, "fail", step=0)  # the dead agent recorded nothing


# Both supervisors scan every 10 ms, so their scans of the same due entries overlap.
@pytest.mark.fleet_env(SASFLEET_SUPERVISOR_TICK_S="0.01")
async def test_racing_supervisors_fail_and_follow_each_overdue_attempt_once(
    fleet, start_services, client, jobs
):
    # Two supervisors scan the same deadlines; one agent runs every step.
    scheduler, supervisor_a, supervisor_b, agent = start_services(
        ("scheduler", ()),
        ("supervisor", ()),
        ("supervisor", ()),
        ("agent", ("sasfleet.examples.tasks", "--concurrency", "25")),
    )
    n = 20
    job_ids = await asyncio.gather(*(client.submit("sleep", {"seconds": 3}) for _ in range(n)))
    await asyncio.gather(
        *(
            jobs.until(j, lambda v: v.steps[0].status == "running", timeout=20, what="running")
            for j in job_ids
        )
    )

    agent.kill()  # 20 running steps whose leases will expire together
    fleet.agent("sasfleet.examples.tasks", concurrency=25)

    outcomes = await asyncio.gather(*(client.wait(j, timeout=40) for j in job_ids))
    assert [o.status for o in outcomes] == ["succeeded"] * n
    supervisors = {supervisor_a.pid, supervisor_b.pid}
    recovered_by: Counter[int] = Counter()
    for job_id in job_ids:
        view = await client.get(job_id)
        assert view is not None and view.status == "succeeded"
        h = view.history
        # Each overdue attempt was failed once and its failure followed once...
        fails = events(h, "timeout_fail")
        per_attempt = Counter(e.attempt for e in fails)
        assert per_attempt and all(c == 1 for c in per_attempt.values()), (
            job_id,
            [(e.attempt, e.lease, e.by) for e in fails],
        )
        assert sorted(per_attempt) == list(range(1, 1 + len(per_attempt)))
        assert Counter(e.attempt for e in events(h, "retry_later")) == per_attempt
        # ...by one supervisor (the failure and what follows it are one atomic step), and
        # each next attempt dispatched once by a scheduler, under a lease of its own.
        for attempt in per_attempt:
            timeout, _, _ = timed_out_and_retried(h, 0, attempt)
            pid = next((p for p in supervisors if written_by(timeout, "supervisor", p)), None)
            assert pid is not None, timeout
            recovered_by[pid] += 1
        retries = events(h, "retry")
        assert sorted(e.attempt for e in retries) == [a + 1 for a in sorted(per_attempt)]
        leases = [e.lease for e in retries]
        assert len(set(leases)) == len(leases)
        assert len(events(h, "succeed", step=0)) == 1
    assert scheduler.alive() and supervisor_a.alive() and supervisor_b.alive()
    print(f"timeouts failed by supervisor pid: {dict(recovered_by)}")


async def test_superseded_attempt_cannot_change_the_step(services, client, jobs, redis, settings):
    # The agent hangs (SIGSTOP) mid-step: its lease expires, the supervisor fails attempt
    # 1 and attempt 2 is dispatched after its backoff.
    # Resumed, the agent either drops attempt 1 on its next lease check or records its
    # late result, which must be rejected. Either way nothing is recorded under lease 1.
    agent = services.agent
    job_id = await client.submit("sleep", {"seconds": 2.5})
    await jobs.until(
        job_id, lambda v: v.steps[0].status == "running", timeout=15, what="step 0 running"
    )

    agent.signal(signal.SIGSTOP)
    try:
        taken_over = await jobs.until(
            job_id, lambda v: v.steps[0].attempt == 2, timeout=15, what="attempt 2 dispatched"
        )
    finally:
        agent.signal(signal.SIGCONT)
    (claim_1,) = events(taken_over.history, "claim", step=0, attempt=1)
    timeout, _, retry = timed_out_and_retried(taken_over.history, 0, 1)
    assert written_by(timeout, "supervisor", services.supervisor.pid)
    assert "lease expired" in (timeout.detail or "")
    assert timeout.lease == claim_1.lease < retry.lease

    # A late write under the superseded lease, as a hung agent would make it.
    late_writer = "agent-late-writer-test"
    store = StateStore(redis, settings.prefix, timings=StoreTimings.of(settings))
    answer = await store.record(
        job_id, 0, claim_1.lease, late_writer, result=b'{"late":true}', advance=True
    )
    assert isinstance(answer, Stale) and answer.lease >= retry.lease, answer

    view = await jobs.until(
        job_id, lambda v: v.status in JOB_TERMINAL, timeout=30, what="a terminal state"
    )
    h = view.history
    (rejected,) = [e for e in events(h, "stale_result_rejected") if e.by == late_writer]
    assert (rejected.step, rejected.lease, rejected.status) == (0, claim_1.lease, "succeeded")
    assert rejected.previous in ("dispatched", "running")
    assert (rejected.detail or "").startswith("current lease ")
    assert int((rejected.detail or "0").rsplit(" ", 1)[-1]) >= retry.lease
    # The hung agent's own late result, if it made one, was rejected the same way.
    for e in events(h, "stale_result_rejected"):
        assert e.lease < view.steps[0].lease, e
    # Nothing was ever recorded under the superseded lease.
    assert not [e for e in h if e.event in ("succeed", "fail") and e.lease == claim_1.lease]
    assert view.steps[0].result != {"late": True}
    assert view.result != {"late": True}
    assert view.steps[0].lease >= retry.lease
    assert agent.alive()


async def test_step_survives_its_agent_hanging_past_the_lease(services, client, jobs):
    # One agent; it hangs ~1 s past its lease. Attempt 2 comes back to it and is claimed
    # while the superseded attempt 1 still sleeps (it ends 1.5 s later).
    agent = services.agent
    job_id = await client.submit("sleep", {"seconds": 4.5}, max_attempts=2)
    await jobs.until(
        job_id, lambda v: v.steps[0].status == "running", timeout=15, what="step 0 running"
    )

    agent.signal(signal.SIGSTOP)
    try:
        await jobs.until(
            job_id, lambda v: v.steps[0].attempt == 2, timeout=15, what="attempt 2 dispatched"
        )
        await asyncio.sleep(0.8)  # shapes the scenario: the agent stays hung a while longer
    finally:
        agent.signal(signal.SIGCONT)

    outcome = await client.wait(job_id, timeout=20)
    view = await client.get(job_id)
    assert view is not None
    assert outcome.status == "succeeded", [
        (e.event, e.attempt, e.lease, e.detail) for e in view.history
    ]
    assert (view.steps[0].attempt, outcome.result) == (2, {"slept": 4.5})


@pytest.mark.fleet_env(SASFLEET_ADVANCE_GRACE_S="1")
async def test_next_step_whose_agent_died_before_publishing_it_runs_as_its_first_attempt(
    services, client, jobs, redis, settings, pools
):
    # Step 0 is in a pool no agent serves: this test is its agent. It claims the step and
    # records its success, which dispatches step 1 in Redis, then "dies" before publishing
    # that dispatch. Once the recorded step is due, the supervisor publishes it in the
    # agent's place; step 1 runs as attempt 1 (no attempt is spent) on the real agent.
    pools.add("by-hand")
    job_id = await client.submit(
        steps=[
            StepSpec(task="echo", payload={"n": 0}, pool="by-hand", max_attempts=1),
            StepSpec(task="echo", payload={"n": 1}, max_attempts=1),
        ]
    )
    view = await jobs.until(
        job_id, lambda v: v.steps[0].status == "dispatched", timeout=15, what="step 0 dispatched"
    )
    lease = view.steps[0].lease
    store = StateStore(redis, settings.prefix, timings=StoreTimings.of(settings))
    policy = resolve_policy(settings.retry_policy(), (1, None))
    assert await store.claim(job_id, 0, lease, "agent-by-hand", policy)
    # As an agent records a forward success: the record follows it with step 1's dispatch,
    # which this "agent" never publishes (nor settles).
    order = await store.record(job_id, 0, lease, "agent-by-hand", result=b'{"n":0}', advance=True)
    assert isinstance(order, DispatchOrder) and (order.step, order.attempt) == (1, 1)

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "succeeded" and outcome.result == {"n": 1}
    final = await client.get(job_id)
    assert final is not None
    assert [(s.status, s.attempt) for s in final.steps] == [("succeeded", 1), ("succeeded", 1)]
    h = final.history
    (dispatch,) = events(h, "dispatch", step=1)
    (republish,) = events(h, "republish", step=1)
    assert dispatch.by == "agent-by-hand"
    assert written_by(republish, "supervisor", services.supervisor.pid)
    assert republish.lease == dispatch.lease == order.lease
    assert republish.ts - dispatch.ts >= 1000  # the recorded step's grace ran out first
    (claim,) = events(h, "claim", step=1)
    assert written_by(claim, "agent-default", services.agent.pid) and claim.lease == order.lease
    assert not [e for e in h if e.event in ("timeout_fail", "retry_later", "retry")]


async def test_an_agent_refused_its_queue_at_start_waits_then_serves_it(
    fleet, settings, names, client, eventually
):
    # A classic queue squats the pool queue's name, so the agent's declare is refused
    # (PRECONDITION_FAILED): a broker error while it starts its consumers, as when RabbitMQ
    # 3.10 answers INTERNAL_ERROR to a consume of a quorum queue just declared elsewhere.
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    channel = await connection.channel()
    squatter = await channel.declare_queue(names.pool(settings.default_pool), durable=True)
    agent = fleet.agent(wait=False)
    try:
        await eventually(
            lambda: asyncio.to_thread(lambda: "PRECONDITION_FAILED" in agent.log()),
            timeout=30,
            what="the agent's queue to be refused",
        )
        await asyncio.sleep(1.0)  # it would have exited by now
        assert agent.alive() and not agent.ready_file.exists(), agent.log()[-3000:]
    finally:
        await squatter.delete(if_unused=False, if_empty=False)
        await connection.close()

    await asyncio.to_thread(fleet.wait_ready, agent, 30.0)
    fleet.scheduler()
    job_id = await client.submit("echo", {"x": 1})
    outcome = await client.wait(job_id, timeout=20)

    assert outcome.succeeded and outcome.result == {"x": 1}
    log = agent.log()
    assert "unavailable" in log and "retrying" in log, log[-3000:]
    view = await client.get(job_id)
    assert view is not None
    (claim,) = events(view.history, "claim")
    assert written_by(claim, "agent", agent.pid)


async def test_consumers_start_through_rabbitmqs_quorum_queue_startup_race(settings, monkeypatch):
    # RabbitMQ 3.10 closes a consumer's whole connection with INTERNAL_ERROR when it
    # consumes a quorum queue that another connection has declared but whose Raft member
    # is not running yet (an agent crashed of it at start in a drain benchmark). The bind
    # between a service's declare and its consume shuts that window on an idle broker, so
    # the test skips the bind, as a busy broker's delay would; the queue is still the
    # fleet's (same arguments), and messages go to it through the default exchange.
    async def declare_without_bind(self: Topology, name: str) -> AbstractQueue:
        if name not in self._queues:
            arguments = queue_arguments(self.names)
            self._queues[name] = await self.channel.declare_queue(
                name, durable=True, arguments=arguments
            )
        return self._queues[name]

    monkeypatch.setattr(Topology, "queue", declare_without_bind)
    stop = asyncio.Event()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(delivery: Delivery) -> Ack:
        await got.put(delivery.body)
        return Ack()

    url = settings.amqp_url.get_secret_value()
    # Two connections that race the service's consumer, then one that publishes.
    others = [await aio_pika.connect(url) for _ in range(3)]
    pools = [f"race{i}" for i in range(15)]
    names = [Names(settings.prefix).pool(pool) for pool in pools]
    arguments = queue_arguments(Names(settings.prefix))

    channels = [await other.channel() for other in others[:2]]

    async def refuse(message: AbstractIncomingMessage) -> None:
        await message.nack(requeue=True)

    async def declare(i: int, name: str, consume: bool) -> None:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            if channels[i].is_closed:  # the broker closed its connection: a new one
                others[i] = await aio_pika.connect(url)
                channels[i] = await others[i].channel()
            queue = await channels[i].declare_queue(name, durable=True, arguments=arguments)
            if consume:
                await queue.consume(refuse)

    try:
        async with connected(settings, "agent", "test-race", stop, prefetch=4) as c:
            for name in names:
                *_, consumer = await asyncio.gather(
                    declare(0, name, consume=False),
                    declare(1, name, consume=True),
                    c.consumer(name, handle),
                )
                assert consumer.queue.name == name
            for racer in others[:2]:  # their consumer would take messages too
                await racer.close()
            publisher = await others[2].channel()
            for name in names:
                await publisher.default_exchange.publish(aio_pika.Message(name.encode()), name)
            received = {await asyncio.wait_for(got.get(), 15) for _ in names}
            assert received == {n.encode() for n in names}
    finally:
        for other in others:
            await other.close()
        await purge_fleet(settings, pools)
