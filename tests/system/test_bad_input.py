"""Bad input never crashes a service: it is dead-lettered with a reason, and the job (when
the message names one) is recorded FAILED with that reason."""

from __future__ import annotations

import uuid

import aio_pika
import msgspec
import pytest

from sasfleet.shared.amqp.topology import QUEUE_HEADER, REASON_HEADER


def reason_of(raw, message) -> str:
    return raw.header(message, REASON_HEADER) or ""


def from_queue(raw, queue: str, *, mentioning: str = "", message_id: str | None = None):
    def match(message) -> bool:
        return (
            raw.header(message, QUEUE_HEADER) == queue
            and mentioning in reason_of(raw, message)
            and (message_id is None or message.message_id == message_id)
        )

    return match


async def still_serving(services, client) -> None:
    """Every service process is alive and a new job still succeeds."""
    for service in services.all():
        assert service.alive(), f"{service.name} died:\n{service.log()[-4000:]}"
    job_id = await client.submit("echo", {"after": "bad input"})
    outcome = await client.wait(job_id, timeout=20)
    assert (outcome.status, outcome.result) == ("succeeded", {"after": "bad input"})


async def test_undecodable_submission_is_dead_lettered_with_its_reason(
    services, raw, client, names
):
    body = b"\x00\xffthis is { not json"
    await raw.publish(body)

    dead = await raw.dead_letter(from_queue(raw, names.submit, mentioning="invalid submission"))

    assert dead.body == body
    assert raw.header(dead, "x-sasfleet-by").startswith("scheduler-")
    await still_serving(services, client)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"task": "not a task name", "payload": {}}, id="task-with-spaces"),
        pytest.param({"task": "echo", "payload": {}, "colour": "red"}, id="unknown-field"),
        pytest.param({"payload": {}}, id="no-task-nor-steps"),
        pytest.param({"task": "echo", "max_attempts": 0}, id="max-attempts-below-1"),
    ],
)
async def test_invalid_submission_naming_a_job_fails_it_and_replies(
    services, raw, client, names, doc
):
    job_id = f"bad-{uuid.uuid4().hex}"
    replies = await raw.reply_queue()

    await raw.submit({**doc, "job_id": job_id}, reply_to=replies.name, correlation_id="c-bad")

    dead = await raw.dead_letter(from_queue(raw, names.submit, mentioning="invalid submission"))
    assert msgspec.json.decode(dead.body)["job_id"] == job_id
    reason = reason_of(raw, dead)
    view = await client.get(job_id)
    assert view is not None
    assert view.status == "failed"
    assert view.error["type"] == "InvalidSubmission"
    assert view.error["message"] == reason
    assert view.steps == []
    (reject,) = (h for h in view.history if h.event == "reject")
    assert reject.status == "failed" and reject.detail == reason
    reply = await raw.next_message(replies, what="the failed reply")
    assert reply.correlation_id == "c-bad"
    answer = msgspec.json.decode(reply.body)
    assert (answer["kind"], answer["job_id"], answer["status"]) == (
        "job_finished",
        job_id,
        "failed",
    )
    assert answer["error"]["message"] == reason
    await still_serving(services, client)


async def test_unknown_task_is_dead_lettered_from_the_pool_and_fails_the_job(
    services, raw, client, names
):
    job_id = await client.submit("no_such_task", {"x": 1}, max_attempts=3)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "UnknownTask"
    assert "no_such_task" in outcome.error.message
    dead = await raw.dead_letter(
        from_queue(raw, names.pool("default"), mentioning="unknown task 'no_such_task'")
    )
    assert reason_of(raw, dead).startswith("unknown task")
    assert msgspec.json.decode(dead.body)["job_id"] == job_id
    assert raw.header(dead, "x-sasfleet-by").startswith("agent-default-")
    view = await client.get(job_id)
    assert view is not None
    assert (view.steps[0].status, view.steps[0].attempt) == ("failed", 1)
    assert not [h for h in view.history if h.event in ("retry_later", "retry", "timeout_fail")]
    await still_serving(services, client)


@pytest.mark.fleet_env(SASFLEET_MAX_PAYLOAD_BYTES="2000")
async def test_oversized_submission_is_dead_lettered_and_its_job_failed(
    services, raw, client, names
):
    job_id = f"big-{uuid.uuid4().hex}"
    body = msgspec.json.encode({"task": "echo", "payload": {"blob": "x" * 5000}})
    assert len(body) > 2000

    await raw.publish(body, message_id=job_id)

    dead = await raw.dead_letter(from_queue(raw, names.submit, message_id=job_id))
    reason = reason_of(raw, dead)
    assert "exceeds the payload limit of 2000 bytes" in reason
    view = await client.get(job_id)
    assert view is not None and view.status == "failed"
    assert view.error["message"] == reason
    assert "2000" in view.error["message"]
    await still_serving(services, client)


async def test_garbage_on_the_events_and_pool_queues_is_dead_lettered(services, raw, client, names):
    await raw.publish(b"garbage for the scheduler", routing_key=names.events)
    await raw.publish(
        msgspec.json.encode({"kind": "step_recorded", "job_id": 7}), routing_key=names.events
    )
    await raw.publish(b"garbage for the agents", routing_key=names.pool("default"))
    await raw.publish(
        msgspec.json.encode({"kind": "dispatch", "job_id": "j"}), routing_key=names.pool("default")
    )

    for queue, why in (
        (names.events, "invalid step event"),
        (names.pool("default"), "invalid step dispatch"),
    ):
        for body_start in (b"garbage", b"{"):

            def match(m, queue=queue, why=why, body_start=body_start) -> bool:
                return from_queue(raw, queue, mentioning=why)(m) and m.body.startswith(body_start)

            await raw.dead_letter(match, what=f"{why} from {queue} ({body_start!r}...)")
    await still_serving(services, client)


async def test_every_kind_of_bad_input_in_a_row_leaves_the_fleet_serving(
    services, raw, client, names
):
    await raw.publish(b"not json")
    await raw.submit({"task": "bad name", "job_id": f"j-{uuid.uuid4().hex}"})
    await raw.submit({"task": "echo"}, message_id="spaces are not allowed {in ids}")
    await raw.publish(b"\x80\x81", routing_key=names.events)
    await raw.publish(b"[]", routing_key=names.pool("default"))
    unknown = await client.submit("nope", None)
    assert (await client.wait(unknown, timeout=20)).status == "failed"

    for queue, count in ((names.submit, 3), (names.events, 1), (names.pool("default"), 2)):
        await raw.dead_letters(from_queue(raw, queue), count, what=f"dead letters from {queue}")
    assert all(reason_of(raw, m) for m in raw.seen_dead)
    await still_serving(services, client)


@pytest.mark.fleet_env(SASFLEET_MAX_PAYLOAD_BYTES="2000")
async def test_a_submission_just_under_the_limit_runs_though_its_dispatch_is_larger(
    services, raw, client
):
    job_id = f"near-{uuid.uuid4().hex}"
    payload = {"b": "x" * 1900}
    body = msgspec.json.encode({"task": "echo", "payload": payload, "max_attempts": 2})
    assert 1900 < len(body) <= 2000  # accepted by the scheduler; its dispatch is larger

    await raw.publish(body, message_id=job_id)

    outcome = await client.wait(job_id, timeout=20)
    assert outcome.status == "succeeded"
    assert outcome.result == payload


async def test_invalid_resubmission_naming_an_existing_job_does_not_report_it_failed(
    services, raw, client, names
):
    job_id = await client.submit("echo", {"ok": True})
    assert (await client.wait(job_id, timeout=20)).status == "succeeded"
    replies = await raw.reply_queue()

    await raw.submit(
        {"task": "bad name", "job_id": job_id}, reply_to=replies.name, correlation_id=job_id
    )

    await raw.dead_letter(from_queue(raw, names.submit, mentioning="invalid submission"))
    view = await client.get(job_id)
    assert view is not None and view.status == "succeeded"  # the job itself is untouched
    reply = await raw.next_message(replies, what="the reply to the rejected submission")
    answer = msgspec.json.decode(reply.body)
    if answer["job_id"] == job_id:  # a reply about the job must tell its real state
        assert answer["status"] == "succeeded", answer


async def test_an_agent_runs_only_the_recorded_step_never_a_forged_dispatch(
    fleet, raw, client, jobs, names, pools, settings, eventually
):
    pool = f"forged-{uuid.uuid4().hex[:8]}"  # no agent serves it yet
    pools.add(pool)
    payload = {"owner": "alice", "amount": 10}
    job_id = await client.submit("echo", payload, pool=pool)
    await jobs.until(
        job_id, lambda v: v.steps[0].status == "dispatched", timeout=10, what="the dispatch"
    )

    # Take the real dispatch off the queue, and put a forged one in its place: the same
    # job, step, attempt and lease, another task and payload.
    async def take_dispatch() -> aio_pika.abc.AbstractIncomingMessage | None:
        # On a connection of its own: RabbitMQ 3.10 closes the connection with INTERNAL_ERROR
        # (noproc) when a quorum queue just declared is read before its Raft member runs.
        try:
            async with await aio_pika.connect(settings.amqp_url.get_secret_value()) as conn:
                queue = await (await conn.channel()).get_queue(names.pool(pool), ensure=False)
                return await queue.get(no_ack=True, fail=False)
        except aio_pika.exceptions.AMQPError:
            return None

    real = await eventually(take_dispatch, timeout=10, what="the dispatch message")
    doc = msgspec.json.decode(real.body)
    assert (doc["job_id"], doc["task"], doc["payload"]) == (job_id, "echo", payload)
    forged = msgspec.json.encode({**doc, "task": "sleep", "payload": {"seconds": 30}})
    await raw.publish(forged, routing_key=names.pool(pool))
    fleet.start("agent", "sasfleet.examples.tasks", "--pool", pool)

    dead = await raw.dead_letter(from_queue(raw, names.pool(pool), mentioning="does not match"))
    assert dead.body == forged
    view = await client.get(job_id)
    assert view is not None and view.steps[0].status == "dispatched"  # nothing ran
    (rejected,) = [h for h in view.history if h.event == "claim_rejected"]
    assert rejected.detail == "the dispatch does not match the recorded step"

    await raw.publish(real.body, routing_key=names.pool(pool))  # the real one still claims
    outcome = await client.wait(job_id, timeout=30)
    assert (outcome.status, outcome.result) == ("succeeded", payload)
    view = await client.get(job_id)
    assert view is not None and [h.event for h in view.history].count("claim") == 1
