"""Jobs end to end through the real services: Python client, CLI and raw AMQP."""

from __future__ import annotations

import uuid

import msgspec

from sasfleet.examples.tasks import ORDER_STEPS, order_job
from sasfleet.shared.ids import job_id_for_key
from sasfleet.shared.state.views import HistoryEntry
from sasfleet.shared.statemachine import JOB_TERMINAL


def events(history: list[HistoryEntry], event: str, **match: object) -> list[HistoryEntry]:
    return [
        h for h in history if h.event == event and all(getattr(h, k) == v for k, v in match.items())
    ]


def by_process(entry: HistoryEntry, role: str, pid: int) -> bool:
    """Whether a history entry was written by the service process ``pid`` of ``role``."""
    return entry.by.startswith(f"{role}-") and f"-{pid}-" in entry.by


async def test_one_step_job_succeeds_through_the_python_client(services, client):
    job_id = await client.submit("echo", {"x": 1})

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "succeeded"
    assert outcome.result == {"x": 1}
    assert outcome.error is None
    view = await client.get(job_id)
    assert view is not None
    assert view.status == "succeeded"
    assert view.result == {"x": 1}
    assert [(s.status, s.attempt, s.result) for s in view.steps] == [("succeeded", 1, {"x": 1})]
    h = view.history
    (submit,) = events(h, "submit")
    (dispatch,) = events(h, "dispatch", step=0)
    (claim,) = events(h, "claim", step=0)
    (step_succeed,) = events(h, "succeed", step=0)
    (job_succeed,) = [e for e in h if e.step is None and e.status in JOB_TERMINAL]
    assert [h.index(e) for e in (submit, dispatch, claim, step_succeed, job_succeed)] == sorted(
        h.index(e) for e in (submit, dispatch, claim, step_succeed, job_succeed)
    )
    for entry in (submit, dispatch):
        assert by_process(entry, "scheduler", services.scheduler.pid), entry
    # The agent that records the last step's success ends the job in the same script.
    for entry in (claim, step_succeed, job_succeed):
        assert by_process(entry, "agent-default", services.agent.pid), entry
    assert job_succeed.ts == step_succeed.ts
    assert dispatch.attempt == claim.attempt == step_succeed.attempt == 1
    assert dispatch.lease == claim.lease == step_succeed.lease
    assert job_succeed.status == "succeeded"


async def test_cli_submits_waits_shows_and_lists_jobs_and_agents(services, sasfleet_cli):
    submitted = await sasfleet_cli("submit", "echo", "--payload", '{"x":1}', "--wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    out = submitted.json()
    assert out["status"] == "succeeded"
    assert out["result"] == {"x": 1}
    job_id = out["job_id"]

    shown = await sasfleet_cli("job", "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = shown.json()
    assert doc["status"] == "succeeded"
    assert doc["job_id"] == job_id
    assert doc["steps"][0]["attempt"] == 1
    assert doc["steps"][0]["status"] == "succeeded"
    assert {"submit", "dispatch", "claim", "succeed"} <= {e["event"] for e in doc["history"]}

    failed = await sasfleet_cli("submit", "fail", "--wait")
    assert failed.returncode != 0
    assert "failed" in failed.stdout

    listed = await sasfleet_cli("jobs", "--status", "succeeded", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = listed.json()
    assert job_id in [j["job_id"] for j in rows]
    assert {j["status"] for j in rows} == {"succeeded"}

    agents = await sasfleet_cli("agents", "--json")
    assert agents.returncode == 0, agents.stderr
    live = agents.json()
    mine = [a for a in live if a["pid"] == services.agent.pid]
    assert len(mine) == 1, live
    assert mine[0]["pool"] == "default"
    assert "echo" in mine[0]["tasks"]


async def test_cli_show_of_unknown_job_exits_nonzero(services, sasfleet_cli):
    shown = await sasfleet_cli("job", "show", "no-such-job", "--json")
    assert shown.returncode != 0


async def test_raw_amqp_submission_gets_a_correlated_reply(raw):
    replies = await raw.reply_queue()
    message_id = f"raw-{uuid.uuid4().hex}"
    correlation_id = f"corr-{uuid.uuid4().hex}"

    await raw.submit(
        {"task": "echo", "payload": {"x": 1}},
        message_id=message_id,
        reply_to=replies.name,
        correlation_id=correlation_id,
    )

    reply = await raw.next_message(replies, what="the job_finished reply")
    assert reply.correlation_id == correlation_id
    doc = msgspec.json.decode(reply.body)
    assert doc["kind"] == "job_finished"
    assert doc["job_id"] == message_id
    assert doc["status"] == "succeeded"
    assert doc["result"] == {"x": 1}


async def test_raw_amqp_submission_job_id_field_names_the_job(raw, client):
    replies = await raw.reply_queue()
    job_id = f"named-{uuid.uuid4().hex}"

    await raw.submit(
        {"task": "echo", "payload": {"y": 2}, "job_id": job_id},
        message_id=f"msg-{uuid.uuid4().hex}",
        reply_to=replies.name,
        correlation_id="c-1",
    )

    reply = await raw.next_message(replies, what="the job_finished reply")
    doc = msgspec.json.decode(reply.body)
    assert (doc["job_id"], doc["status"], doc["result"]) == (job_id, "succeeded", {"y": 2})
    assert reply.correlation_id == "c-1"
    view = await client.get(job_id)
    assert view is not None and view.status == "succeeded"


async def test_resubmission_with_the_same_idempotency_key_runs_one_job(raw, client, redis, keys):
    key = f"order-{uuid.uuid4().hex}"

    first = await client.submit("echo", {"n": 1}, idempotency_key=key)
    second = await client.submit("echo", {"n": 1}, idempotency_key=key)
    assert first == second == job_id_for_key(key)
    outcome = await client.wait(first, timeout=20)
    assert (outcome.status, outcome.result) == ("succeeded", {"n": 1})

    # The same key from a raw AMQP client with a message_id of its own: the existing job.
    replies = await raw.reply_queue()
    await raw.submit(
        {"task": "echo", "payload": {"n": 1}, "idempotency_key": key},
        message_id=f"other-{uuid.uuid4().hex}",
        reply_to=replies.name,
        correlation_id="dup",
    )
    reply = await raw.next_message(replies, what="a reply to the duplicate submission")
    doc = msgspec.json.decode(reply.body)
    assert reply.correlation_id == "dup"
    assert (doc["job_id"], doc["status"], doc["result"]) == (first, "succeeded", {"n": 1})

    assert await redis.zcard(keys.jobs(keys.bucket_of(first))) == 1
    assert [j.job_id for j in await client._reader.jobs(None, 10)] == [first]
    view = await client.get(first)
    assert view is not None and view.status == "succeeded"
    assert len(events(view.history, "claim")) == 1
    assert len(events(view.history, "succeed", step=0)) == 1
    assert len(events(view.history, "submit")) == 1


async def test_client_resubmission_of_a_key_first_used_over_raw_amqp_learns_the_job(
    raw, client, jobs
):
    key = f"pay-{uuid.uuid4().hex}"
    await raw.submit(
        {"task": "sleep", "payload": {"seconds": 1.0}, "idempotency_key": key},
        message_id=f"raw-{uuid.uuid4().hex}",
    )
    # With an idempotency key the job id derives from the key, whatever the message_id.
    keyed_id = job_id_for_key(key)
    await jobs.until(keyed_id, lambda v: True, timeout=10, what="recorded")

    job_id = await client.submit("sleep", {"seconds": 1.0}, idempotency_key=key)

    assert job_id == keyed_id
    outcome = await client.wait(job_id, timeout=10)
    assert outcome.status == "succeeded"


async def test_three_step_order_job_runs_its_steps_in_order(services, client):
    job_id = await client.submit(steps=order_job("o-1"))

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "succeeded", outcome.error
    view = await client.get(job_id)
    assert view is not None
    assert [s.task for s in view.steps] == list(ORDER_STEPS)
    assert [s.status for s in view.steps] == ["succeeded"] * 3
    assert [s.attempt for s in view.steps] == [1, 1, 1]
    reserve, charge, ship = (s.result for s in view.steps)
    assert reserve == {"reservation": f"res-{job_id}:0", "order_id": "o-1"}
    assert charge["charge"] == f"ch-{job_id}:1"
    assert charge["amount_cents"] == 1000
    assert charge["fencing_token"] == view.steps[1].lease
    assert ship == {"shipment": f"sh-{job_id}:2", "order_id": "o-1"}
    assert outcome.result == ship == view.result
    # Each step is dispatched only after the previous one succeeded.
    order = [
        (h.event, h.step)
        for h in view.history
        if h.event in ("dispatch", "succeed") and h.step is not None
    ]
    assert order == [
        ("dispatch", 0),
        ("succeed", 0),
        ("dispatch", 1),
        ("succeed", 1),
        ("dispatch", 2),
        ("succeed", 2),
    ]
    # The scheduler dispatches step 0; the agent that records a step's success dispatches
    # the next one in the same script (and publishes it), without a scheduler round trip.
    dispatches = [h for h in view.history if h.event == "dispatch"]
    assert by_process(dispatches[0], "scheduler", services.scheduler.pid)
    for entry in dispatches[1:]:
        assert by_process(entry, "agent-default", services.agent.pid), entry
    # Nothing needed a supervisor's repair (a republish) or a deadline's failure.
    assert not [h for h in view.history if h.event in ("republish", "timeout_fail")]
    assert not [h for h in view.history if h.by.startswith("supervisor-")]
    leases = [s.lease for s in view.steps]
    assert leases == sorted(leases) and len(set(leases)) == 3
    assert view.steps[0].finished_at <= view.steps[1].started_at
    assert view.steps[1].finished_at <= view.steps[2].started_at


async def test_a_submitter_is_told_of_the_end_on_its_redis_channel(raw, redis, keys):
    mine, foreign = f"{keys.notify_prefix}raw-client", "elsewhere:notify:raw"
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(mine, foreign)
    try:
        for i, channel in enumerate((mine, foreign)):
            await raw.submit(
                {"task": "echo", "payload": {"i": i}, "job_id": f"told-{i}-{uuid.uuid4().hex}"},
                headers={"x-sasfleet-notify": channel},
            )

        async def told():
            return await pubsub.get_message(timeout=1.0)

        heard = []
        for _ in range(6):  # a few seconds: the second job ends too, and is not told
            message = await told()
            if message is not None:
                heard.append(message)
        assert [m["channel"] for m in heard] == [mine]  # a foreign channel is never told
        doc = msgspec.json.decode(heard[0]["data"])
        assert doc["kind"] == "job_finished" and doc["job_id"].startswith("told-0-")
        assert (doc["status"], doc["result"], doc["error"]) == ("succeeded", {"i": 0}, None)
    finally:
        await pubsub.aclose()
