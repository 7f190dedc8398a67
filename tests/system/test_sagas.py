"""Sagas through the real services: a three-step order, compensation in reverse order after a
failed last step, a flaky step retried by its policy, and a compensation that cannot finish
escalated with its webhook posted once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from history_support import (
    TRIO,
    compensation_dispatches,
    events,
    job_end,
    view_of,
    with_options,
)

from sasfleet.examples.tasks import order_job
from sasfleet.shared.messages.submit import RetrySpec, StepSpec

# --------------------------------------------------------------------------- sagas


async def test_three_step_order_succeeds_with_every_step_result_recorded(services, client):
    job_id = await client.submit(steps=order_job("o-ok"))

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "succeeded", outcome.error
    view = await view_of(client, job_id)
    assert view.status == "succeeded" and view.error is None
    # No compensation step was ever created.
    assert [(s.index, s.task, s.status, s.attempt) for s in view.steps] == [
        (0, "reserve_stock", "succeeded", 1),
        (1, "charge_card", "succeeded", 1),
        (2, "ship", "succeeded", 1),
    ]
    reserve, charge, ship = (s.result for s in view.steps)
    assert reserve == {"reservation": f"res-{job_id}:0", "order_id": "o-ok"}
    assert charge == {
        "charge": f"ch-{job_id}:1",
        "amount_cents": 1000,
        "fencing_token": view.steps[1].lease,
    }
    assert ship == {"shipment": f"sh-{job_id}:2", "order_id": "o-ok"}
    assert view.result == outcome.result == ship
    assert not events(view.history, "compensating")
    assert not compensation_dispatches(view)
    (end,) = job_end(view.history)
    assert end.event == "succeed" and end.status == "succeeded"
    assert all(s.compensates is None for s in view.steps)


async def test_failed_last_step_compensates_earlier_steps_in_reverse_order(services, client):
    job_id = await client.submit(steps=order_job("o-comp", fail_step="ship"))

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "compensated"
    assert outcome.error is not None and outcome.error.type == "NonRetryableError"
    view = await view_of(client, job_id)
    assert view.status == "compensated"
    assert view.error["type"] == "NonRetryableError"
    assert "ship refused order o-comp" in view.error["message"]
    reserve, charge, ship, release, refund = view.steps
    assert (reserve.status, charge.status) == ("succeeded", "succeeded")
    assert (ship.status, ship.attempt, ship.error["type"]) == ("failed", 1, "NonRetryableError")
    assert ship.error["retryable"] is False
    # In the job document the compensation of step i is step n + i.
    assert (release.index, release.task, release.compensates) == (3, "release_stock", 0)
    assert (refund.index, refund.task, refund.compensates) == (4, "refund_card", 1)
    assert (release.status, release.attempt) == ("succeeded", 1)
    assert (refund.status, refund.attempt) == ("succeeded", 1)
    # Each compensation saw the result of the step it undoes.
    assert release.result == {"released": reserve.result["reservation"]}
    assert refund.result == {"refunded": charge.result["charge"], "amount_cents": 1000}

    h = view.history
    (compensating,) = events(h, "compensating")
    assert compensating.previous == "running" and compensating.status == "compensating"
    assert compensating.detail == "undoing steps 1, 0"
    compensations = compensation_dispatches(view)
    assert [(c.step, c.detail) for c in compensations] == [
        (4, "undoes step 1 with refund_card"),
        (3, "undoes step 0 with release_stock"),
    ]
    (ship_fail,) = events(h, "fail", step=2)
    (refund_done,) = events(h, "succeed", step=4)
    (release_done,) = events(h, "succeed", step=3)
    (end,) = job_end(h)
    # refund_card (undoing step 1) ran and finished before release_stock (undoing step 0).
    sequence = [ship_fail, compensating, compensations[0], refund_done, compensations[1]]
    sequence += [release_done, end]
    assert [h.index(e) for e in sequence] == sorted(h.index(e) for e in sequence)
    assert [e.ts for e in sequence] == sorted(e.ts for e in sequence)
    assert refund.finished_at <= release.started_at
    assert end.status == "compensated"


async def test_flaky_step_is_retried_with_the_steps_backoff_policy(services, client):
    policy = RetrySpec(initial_interval_s=0.3, backoff_coefficient=2, max_interval_s=10, jitter=0)
    steps = with_options(
        order_job("o-flaky", flaky_step="charge_card", flaky_until=3),
        1,
        retry=policy,
        max_attempts=5,
    )
    job_id = await client.submit(steps=steps)

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "succeeded", outcome.error
    view = await view_of(client, job_id)
    charge = view.steps[1]
    assert (charge.status, charge.attempt, charge.max_attempts) == ("succeeded", 3, 5)
    assert [s.attempt for s in view.steps] == [1, 3, 1]
    h = view.history
    fails = events(h, "fail", step=1)
    assert [(f.attempt, f.detail) for f in fails] == [
        (1, "RuntimeError: charge_card flaked on attempt 1 (simulated)"),
        (2, "RuntimeError: charge_card flaked on attempt 2 (simulated)"),
    ]
    waits = events(h, "retry_later", step=1)
    assert [(w.attempt, w.status, w.detail) for w in waits] == [
        (1, "waiting_retry", "retry in 300 ms"),
        (2, "waiting_retry", "retry in 600 ms"),
    ]
    retries = events(h, "retry", step=1)
    assert [(r.event, r.attempt, r.previous) for r in retries] == [
        ("retry", 2, "waiting_retry"),
        ("retry", 3, "waiting_retry"),
    ]
    for fail, wait, retry, delay_ms in zip(fails, waits, retries, (300, 600), strict=True):
        assert h.index(fail) < h.index(wait) < h.index(retry)
        gap = retry.ts - fail.ts
        assert delay_ms <= gap < delay_ms + 1500, (delay_ms, gap)
        assert retry.ts - wait.ts >= delay_ms
    # The other steps did not retry.
    assert not [e for e in h if e.event in ("retry_later", "retry") and e.step != 1]


@dataclass
class Webhook:
    """A tiny HTTP server recording every POST (path and JSON body); answers 200."""

    server: ThreadingHTTPServer
    posts: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    received: list[tuple[str, dict]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Webhook(server, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_failing_compensation_escalates_and_posts_the_webhook_once(
    fleet, start_services, client, webhook, eventually, redis, keys
):
    fleet.env["SASFLEET_ESCALATION_WEBHOOK"] = webhook.url
    start_services(*TRIO)
    order = {"order_id": "o-esc"}
    steps = [
        StepSpec(task="reserve_stock", payload=order, compensation="release_stock"),
        # Its compensation (refund_card gets this step's payload) always fails.
        StepSpec(
            task="charge_card",
            payload={**order, "fail_step": "refund_card"},
            compensation="refund_card",
        ),
        StepSpec(task="ship", payload={**order, "fail_step": "ship"}),
    ]
    job_id = await client.submit(steps=steps)

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "escalated"
    view = await view_of(client, job_id)
    assert view.status == "escalated"
    by_index = {s.index: s for s in view.steps}
    # The compensation of step 0 (index 3) was never started: the saga stopped at the one
    # that failed (refund_card, index 4, undoing step 1).
    assert sorted(by_index) == [0, 1, 2, 4]
    ship, refund = by_index[2], by_index[4]
    assert (ship.status, ship.error["type"]) == ("failed", "NonRetryableError")
    assert (refund.task, refund.compensates, refund.status) == ("refund_card", 1, "failed")
    assert refund.error["type"] == "NonRetryableError"
    assert [c.step for c in compensation_dispatches(view)] == [4]
    (end,) = job_end(view.history)
    assert (end.previous, end.status) == ("compensating", "escalated")

    async def posted() -> bool:
        return bool(webhook.posts)

    await eventually(posted, timeout=15, what="the escalation webhook POST")
    # The report is marked done once the webhook answered 2xx...
    await eventually(
        lambda: _zcard_is_zero(redis, keys.escalations(keys.bucket_of(job_id))),
        timeout=10,
        what="the escalation marked reported",
    )
    # ...so no later supervisor tick (every 1 s) posts it again.
    await asyncio.sleep(2.5)
    posts = webhook.posts[:]
    assert len(posts) == 1, posts
    path, body = posts[0]
    assert path == "/hook"
    assert body["event"] == "job_escalated"
    assert body["job_id"] == job_id
    assert body["job"]["status"] == "escalated"
    assert body["by"].startswith("supervisor-")


async def _zcard_is_zero(redis, key: str) -> bool:
    return await redis.zcard(key) == 0
