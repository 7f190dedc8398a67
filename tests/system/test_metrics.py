"""Each service serves /metrics, /healthz and /readyz; after a known workload through the
real service processes the counters match it exactly."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import aio_pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sasfleet.examples.tasks import order_job
from sasfleet.shared.messages.submit import SubmitJob

pytestmark = pytest.mark.fleet_env(
    SASFLEET_METRICS_INTERVAL_S="0.2", SASFLEET_METRICS_HOST="127.0.0.1"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: str


def _get(url: str) -> Answer:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return Answer(
                response.status, response.headers["Content-Type"], response.read().decode()
            )
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers["Content-Type"], exc.read().decode())


async def get(port: int, path: str) -> Answer:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    """Every sample of a service's /metrics, keyed by (name, sorted labels)."""
    answer = await get(port, "/metrics")
    assert answer.status == 200 and answer.content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name and v}


async def test_counters_match_a_known_workload_exactly(
    fleet, start_services, client, settings, eventually: Callable[..., object]
):
    ports = {role: free_port() for role in ("scheduler", "supervisor", "agent")}
    start_services(
        ("scheduler", ("--metrics-port", str(ports["scheduler"]))),
        ("supervisor", ("--metrics-port", str(ports["supervisor"]))),
        (
            "agent",
            (
                "sasfleet.examples.tasks",
                "--concurrency",
                "8",
                "--metrics-port",
                str(ports["agent"]),
            ),
        ),
    )
    prefix, pool = settings.prefix, f"{settings.prefix}.pool.default"

    # Ready: connected to Redis and RabbitMQ, and consuming (scanning).
    for role, port in ports.items():

        async def is_ready(port: int = port) -> Answer | None:
            answer = await get(port, "/readyz")
            return answer if answer.status == 200 else None

        ready = await eventually(is_ready, timeout=10, what=f"{role} ready")
        report = json.loads(ready.body)
        assert report["ready"] is True and all(report["checks"].values()), report
        assert report["service"] == role
        alive = await get(port, "/healthz")
        assert alive.status == 200 and json.loads(alive.body)["alive"] is True
        assert (await get(port, "/nope")).status == 404

    # The workload: 4 echoes; an order whose charge fails once (a retry) and whose shipping
    # fails for good (two compensations); a non-retryable failure; an unknown task (the
    # agent dead-letters its dispatch); and one undecodable submission.
    jobs = [SubmitJob(task="echo", payload={"n": i}) for i in range(4)]
    jobs.append(
        SubmitJob(
            steps=order_job("o-metrics", flaky_step="charge_card", flaky_until=2, fail_step="ship")
        )
    )
    jobs.append(SubmitJob(task="fail", payload={"retryable": False}))
    jobs.append(SubmitJob(task="nosuch", payload={}))
    ids = await client.submit_many(jobs)
    outcomes = [await client.wait(job_id, timeout=30) for job_id in ids]
    assert [o.status for o in outcomes] == ["succeeded"] * 4 + ["compensated", "failed", "failed"]
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"not json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=f"{prefix}.submit",
        )
    finally:
        await connection.close()

    async def scheduler_settled() -> Samples | None:
        s = await scrape(ports["scheduler"])
        done = value(
            s, "sasfleet_deliveries_total", queue=f"{prefix}.submit", outcome="dead_letter"
        )
        parked = value(s, "sasfleet_queue_messages", queue=f"{prefix}.dead")
        return s if done == 1 and parked == 2 else None

    sched = await eventually(scheduler_settled, timeout=15, what="the scheduler's metrics")
    agent = await scrape(ports["agent"])
    sup = await scrape(ports["supervisor"])

    # Scheduler: jobs by outcome, retries, compensations, dead letters, deliveries.
    assert value(sched, "sasfleet_jobs_submitted_total") == 7
    assert value(sched, "sasfleet_jobs_rejected_total") == 1
    # A job whose last step succeeds is finished by the agent that records it; every
    # other end by a scheduler.
    assert series(agent, "sasfleet_jobs_finished_total") == {(("status", "succeeded"),): 4}
    assert series(sched, "sasfleet_jobs_finished_total") == {
        (("status", "compensated"),): 1,
        (("status", "failed"),): 2,
    }
    assert series(sched, "sasfleet_step_retries_total") == {(("task", "charge_card"),): 1}
    assert series(sched, "sasfleet_compensations_started_total") == {
        (("task", "refund_card"),): 1,
        (("task", "release_stock"),): 1,
    }
    assert series(sched, "sasfleet_dead_letters_total") == {
        (("queue", f"{prefix}.submit"), ("reason", "invalid")): 1
    }
    # The 7 jobs came in one batch message; 6 recorded outcomes announced (of the order's 6
    # attempts, its 2 failures and 2 compensations, the failure and the unknown task; the
    # order's 2 earlier successes dispatched their next step and the 4 echoes ended their
    # jobs at once), each taken up once.
    assert series(sched, "sasfleet_deliveries_total") == {
        (("outcome", "ack"), ("queue", f"{prefix}.submit")): 1,
        (("outcome", "dead_letter"), ("queue", f"{prefix}.submit")): 1,
        (("outcome", "ack"), ("queue", f"{prefix}.events")): 6,
    }
    for queue in (f"{prefix}.submit", f"{prefix}.events", pool):
        assert value(sched, "sasfleet_queue_messages", queue=queue) == 0, queue
    assert value(sched, "sasfleet_queue_consumers", queue=pool) == 1
    assert value(sched, "sasfleet_queue_consumers", queue=f"{prefix}.submit") == 1
    # The two dead letters (the scheduler's and the agent's) wait in the dead-letter queue.
    assert value(sched, "sasfleet_queue_messages", queue=f"{prefix}.dead") == 2
    assert series(sched, "sasfleet_step_timeouts_total") == {}

    # Agent: attempts, durations and queue waits per task, the unknown task dead-lettered.
    attempts = {
        "echo": 4,
        "reserve_stock": 1,
        "charge_card": 2,
        "ship": 1,
        "refund_card": 1,
        "release_stock": 1,
        "fail": 1,
        "nosuch": 1,
    }
    assert series(agent, "sasfleet_step_attempts_total") == {
        (("task", t),): n for t, n in attempts.items()
    }
    assert series(agent, "sasfleet_step_duration_seconds_count") == {
        (("outcome", "succeeded"), ("task", "echo")): 4,
        (("outcome", "succeeded"), ("task", "reserve_stock")): 1,
        (("outcome", "failed"), ("task", "charge_card")): 1,
        (("outcome", "succeeded"), ("task", "charge_card")): 1,
        (("outcome", "failed"), ("task", "ship")): 1,
        (("outcome", "succeeded"), ("task", "refund_card")): 1,
        (("outcome", "succeeded"), ("task", "release_stock")): 1,
        (("outcome", "failed"), ("task", "fail")): 1,
    }
    assert series(agent, "sasfleet_step_queue_wait_seconds_count") == {
        (("task", t),): n for t, n in attempts.items()
    }
    # A step's wait (publish to claim) is positive and, here, short.
    assert 0 < value(agent, "sasfleet_step_queue_wait_seconds_sum", task="echo") < 4 * 5
    assert series(agent, "sasfleet_dead_letters_total") == {
        (("queue", pool), ("reason", "unknown_task")): 1
    }
    assert series(agent, "sasfleet_deliveries_total") == {
        (("outcome", "ack"), ("queue", pool)): 11,
        (("outcome", "dead_letter"), ("queue", pool)): 1,
    }
    assert value(agent, "sasfleet_stale_results_rejected_total", task="echo") == 0
    assert series(agent, "sasfleet_stale_results_rejected_total") == {}
    assert value(agent, "sasfleet_running_steps") == 0
    assert series(agent, "sasfleet_jobs_submitted_total") == {}  # not the agent's to count

    # Supervisor: one live agent in the default pool; nothing needed recovering.
    assert series(sup, "sasfleet_agents_live") == {(("pool", "default"),): 1}
    assert series(sup, "sasfleet_recoveries_total") == {}
    assert series(sup, "sasfleet_agents_lost_total") == {}

    # Every service: connected and ready, with the process collector's series.
    for samples in (sched, agent, sup):
        assert value(samples, "sasfleet_redis_connected") == 1
        assert value(samples, "sasfleet_amqp_connected") == 1
        assert value(samples, "sasfleet_ready") == 1
        assert value(samples, "process_resident_memory_bytes") > 0


async def test_a_timeout_is_counted_by_its_kind_and_by_what_followed_it(
    start_services, client, pools
):
    # No agent serves the pool: each attempt's schedule-to-start deadline passes. The
    # supervisor fails attempt 1 and follows it with a retry timer, which a scheduler
    # fires; then it fails attempt 2 and, with no attempts left, ends the job.
    pools.add("nobody")
    ports = {role: free_port() for role in ("scheduler", "supervisor")}
    start_services(*((role, ("--metrics-port", str(port))) for role, port in ports.items()))
    job_id = await client.submit(
        "echo", {"x": 1}, pool="nobody", schedule_to_start_s=0.3, max_attempts=2
    )

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "ScheduleToStartTimeout"
    sched, sup = await scrape(ports["scheduler"]), await scrape(ports["supervisor"])
    kind = ("kind", "schedule_to_start")
    assert series(sup, "sasfleet_recoveries_total") == {
        (("action", "retry_later"), kind): 1,
        (("action", "finished"), kind): 1,
    }
    assert series(sup, "sasfleet_step_timeouts_total") == {(kind,): 2}
    # The job ended in the supervisor's recovery, so it is counted there (once).
    assert series(sup, "sasfleet_jobs_finished_total") == {(("status", "failed"),): 1}
    assert series(sched, "sasfleet_step_retries_total") == {(("task", "echo"),): 1}
    assert series(sched, "sasfleet_step_timeouts_total") == {}
    assert series(sched, "sasfleet_jobs_finished_total") == {}
