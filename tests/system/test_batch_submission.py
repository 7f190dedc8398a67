"""Batch submission: many jobs in one ``submit_batch`` message, from the Python client or any
AMQP client; each job accepted or refused on its own, none created twice on redelivery."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import msgspec
import pytest

from sasfleet.shared.amqp.topology import QUEUE_HEADER, REASON_HEADER
from sasfleet.shared.errors import InvalidJob
from sasfleet.shared.messages.submit import SubmitJob


def events_of(view, event: str) -> list:
    return [h for h in view.history if h.event == event]


async def test_submit_many_sends_batches_and_every_job_runs_once(services, client) -> None:
    jobs = [SubmitJob(task="echo", payload={"n": i}) for i in range(250)]

    ids = await client.submit_many(jobs, batch_size=100)  # three messages: 100, 100, 50

    assert len(set(ids)) == 250
    outcomes = [await client.wait(job_id, timeout=60) for job_id in ids]
    assert [(o.status, o.result) for o in outcomes] == [("succeeded", {"n": i}) for i in range(250)]
    view = await client.get(ids[-1])
    assert view is not None
    assert [h.event for h in view.history] == ["submit", "start", "dispatch", "claim", "succeed",
                                               "succeed"]  # fmt: skip


async def test_raw_batch_replies_per_job_and_refuses_only_the_invalid_one(raw, client) -> None:
    replies = await raw.reply_queue()
    named = f"named-{uuid.uuid4().hex}"
    message_id = f"batch-{uuid.uuid4().hex}"
    batch = {
        "kind": "submit_batch",
        "jobs": [
            {"task": "echo", "payload": {"a": 1}, "job_id": named},
            {"payload": {"no": "task"}},  # invalid: neither task nor steps
            {"task": "echo", "payload": {"c": 3}},  # its id: <message_id>.2
        ],
    }

    await raw.submit(batch, message_id=message_id, reply_to=replies.name)

    got = {}
    for _ in range(3):
        reply = await raw.next_message(replies, what="a job_finished reply per job")
        doc = msgspec.json.decode(reply.body)
        assert reply.correlation_id == doc["job_id"]
        got[doc["job_id"]] = doc
    assert (got[named]["status"], got[named]["result"]) == ("succeeded", {"a": 1})
    third = got[f"{message_id}.2"]
    assert (third["status"], third["result"]) == ("succeeded", {"c": 3})
    refused = got[f"{message_id}.1"]
    assert refused["status"] == "failed" and refused["error"]["type"] == "InvalidSubmission"
    assert "a job needs `task` or `steps`" in refused["error"]["message"]
    view = await client.get(f"{message_id}.1")
    assert view is not None and view.status == "failed"
    assert [h.event for h in view.history] == ["reject"]


@pytest.mark.parametrize(
    "bad",
    [
        {"task": 7},  # a number where a string belongs
        {"task": "echo", "max_attempts": 0},  # out of its limits
        {"task": "echo", "job_id": "bad-schema", "nosuch": 1},  # an unknown field
    ],
)
async def test_a_job_that_breaks_the_schema_is_refused_alone_and_the_rest_of_its_batch_runs(
    raw, client, bad: dict
) -> None:
    replies = await raw.reply_queue()
    message_id = f"batch-{uuid.uuid4().hex}"
    good = [{"task": "echo", "payload": {"n": i}} for i in range(3)]
    await raw.submit(
        {"kind": "submit_batch", "jobs": [good[0], bad, *good[1:]]},
        message_id=message_id,
        reply_to=replies.name,
    )

    got = {}
    for _ in range(4):
        doc = msgspec.json.decode((await raw.next_message(replies, what="a reply per job")).body)
        got[doc["job_id"]] = doc
    for index, n in ((0, 0), (2, 1), (3, 2)):
        assert (got[f"{message_id}.{index}"]["status"], got[f"{message_id}.{index}"]["result"]) == (
            "succeeded",
            {"n": n},
        )
    # The refused job keeps the id it names, else its place in the batch.
    refused_id = bad.get("job_id") or f"{message_id}.1"
    refused = got[refused_id]
    assert refused["status"] == "failed" and refused["error"]["type"] == "InvalidSubmission"
    view = await client.get(str(refused_id))
    assert view is not None and view.status == "failed"
    assert [h.event for h in view.history] == ["reject"]


async def test_the_client_raises_for_an_invalid_job_and_sends_nothing_of_its_call(
    services, client
) -> None:
    name = uuid.uuid4().hex

    def jobs(tag: str) -> list[SubmitJob]:
        return [
            SubmitJob(task="echo", payload=1, job_id=f"{name}-{tag}0"),
            SubmitJob(task="echo", max_attempts=0, job_id=f"{name}-{tag}1"),  # skips limits
            SubmitJob(task="echo", payload=2, job_id=f"{name}-{tag}2"),
        ]

    with pytest.raises(InvalidJob, match="max_attempts"):
        await client.submit_many(jobs("many"))
    # Submitted at the same moment (one batch message), only the invalid one fails.
    coalesced = jobs("one")
    outcomes = await asyncio.gather(*map(client.submit_job, coalesced), return_exceptions=True)
    assert outcomes[0] == coalesced[0].job_id and outcomes[2] == coalesced[2].job_id
    assert isinstance(outcomes[1], InvalidJob)
    for job in (coalesced[0], coalesced[2]):
        assert (await client.wait(str(job.job_id), timeout=30)).status == "succeeded"
    # By now a job sent by the first call would have been recorded: none was.
    for job in (*jobs("many"), coalesced[1]):
        assert await client.get(str(job.job_id)) is None


async def test_a_redelivered_batch_creates_no_job_twice(raw, client) -> None:
    replies = await raw.reply_queue()
    message_id = f"batch-{uuid.uuid4().hex}"
    body = {
        "kind": "submit_batch",
        "jobs": [{"task": "echo", "payload": {"i": i}} for i in range(5)],
    }

    for _ in range(2):  # as if the broker delivered it again after a scheduler crash
        await raw.submit(body, message_id=message_id, reply_to=replies.name)

    ids = [f"{message_id}.{i}" for i in range(5)]
    for job_id in ids:
        outcome = await client.wait(job_id, timeout=30)
        assert (outcome.status, outcome.result) == ("succeeded", {"i": int(job_id[-1])})
        view = await client.get(job_id)
        assert view is not None
        assert len(events_of(view, "submit")) == 1 and len(events_of(view, "claim")) == 1


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"kind": "submit_batch", "jobs": []}', "invalid submission batch"),
        (b'{"kind": "submit_batch", "jobs": [{"task": 7}]}', "every job of the batch refused"),
        (b'{"kind": "submit_batch"}', "invalid submission batch"),
    ],
)
async def test_an_undecodable_batch_is_dead_lettered_whole(
    services, raw, client, names, body: bytes, reason: str
) -> None:
    message_id = f"bad-{uuid.uuid4().hex}"
    await raw.publish(body, message_id=message_id)

    dead = await raw.dead_letter(
        lambda m: raw.header(m, QUEUE_HEADER) == names.submit and m.message_id == message_id
    )
    assert dead.body == body
    assert reason in (raw.header(dead, REASON_HEADER) or "")
    assert services.scheduler.alive()
    assert await client.get(message_id) is None  # no job was recorded for it


async def test_submissions_made_at_the_same_moment_travel_in_one_message(
    fleet, settings, client, names
) -> None:
    # No scheduler runs: the messages stay in the submit queue to be looked at.
    ids = await asyncio.gather(*(client.submit("echo", {"i": i}) for i in range(10)))
    lone = await client.submit("echo", {"lone": True})

    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        queue = await (await connection.channel()).get_queue(names.submit, ensure=False)
        first, second = await queue.get(no_ack=True), await queue.get(no_ack=True)
        assert await queue.get(no_ack=True, fail=False) is None
    finally:
        await connection.close()
    batch = msgspec.json.decode(first.body)
    assert batch["kind"] == "submit_batch"
    assert [j["job_id"] for j in batch["jobs"]] == ids
    assert [j["payload"] for j in batch["jobs"]] == [{"i": i} for i in range(10)]
    single = msgspec.json.decode(second.body)  # a lone job goes as a plain submission
    assert (single["kind"], single["job_id"], single["payload"]) == ("submit", lone, {"lone": True})
