"""``sasfleet_jobs_finished_total{status}``, summed over every process of a fleet, is the
number of jobs that ended, exactly: whoever ended each one (an agent recording a job's
last success, a scheduler following a failure or a cancel, a supervisor following a
timeout or a lost agent), with several of each racing over the same jobs."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable

import pytest
from test_metrics import Samples, free_port, scrape, series

from sasfleet.examples.tasks import order_job
from sasfleet.shared.messages.submit import SubmitJob
from sasfleet.shared.statemachine import JOB_TERMINAL

pytestmark = pytest.mark.fleet_env(
    SASFLEET_METRICS_HOST="127.0.0.1",
    SASFLEET_LEASE_S="1",
    SASFLEET_AGENT_TIMEOUT_S="2",
    SASFLEET_SUPERVISOR_TICK_S="0.05",
    SASFLEET_ADVANCE_GRACE_S="1",
)
NOBODY = "nobody"  # a pool no agent serves: its steps time out unclaimed


def finished_by_status(samples: Samples) -> Counter[str]:
    counts = series(samples, "sasfleet_jobs_finished_total")
    return Counter({dict(labels)["status"]: int(v) for labels, v in counts.items()})


async def test_jobs_finished_summed_over_the_fleet_is_the_number_of_jobs_that_ended(
    fleet, start_services, client, pools, eventually: Callable[..., object]
):
    pools.add(NOBODY)
    roles = ["scheduler", "scheduler", "supervisor", "supervisor", "agent", "agent", "agent"]
    ports = [free_port() for _ in roles]
    specs = []
    for role, port in zip(roles, ports, strict=True):
        args = ("--metrics-port", str(port))
        if role == "agent":
            args = ("sasfleet.examples.tasks", "--concurrency", "8", *args)
        specs.append((role, args))
    services = start_services(*specs)
    agents = [s for s in services if s.role == "agent"]

    jobs = [SubmitJob(task="echo", payload={"n": i}) for i in range(60)]  # ended by agents
    jobs += [  # compensated by schedulers
        SubmitJob(steps=order_job(f"o-{i}", fail_step="ship")) for i in range(8)
    ]
    jobs += [SubmitJob(task="fail", payload={"retryable": False}) for _ in range(6)]
    jobs += [  # never claimed: a supervisor fails them and ends the job
        SubmitJob(task="echo", pool=NOBODY, schedule_to_start_s=0.5, max_attempts=1)
        for _ in range(4)
    ]
    long_ones = [  # their agent freezes under them; no attempt left: a supervisor ends them
        SubmitJob(task="sleep", payload={"seconds": 30}, max_attempts=1) for _ in range(4)
    ]
    to_cancel = [SubmitJob(task="sleep", payload={"seconds": 30}) for _ in range(3)]
    ids = await client.submit_many(jobs + long_ones + to_cancel)
    cancel_ids = ids[-len(to_cancel) :]
    long_ids = ids[len(jobs) : len(jobs) + len(long_ones)]

    async def running(job_ids: list[str]) -> list[str] | None:
        views = [await client.get(j) for j in job_ids]
        holders = [v.steps[0].locked_by for v in views if v and v.steps[0].status == "running"]
        return holders if len(holders) == len(job_ids) else None

    holders = await eventually(lambda: running(long_ids), timeout=20, what="the long steps run")
    # SIGSTOP (not SIGKILL: a killed process takes its counters with it) every agent that
    # holds one; their leases run out, and supervisors fail those steps for good.
    frozen = [a for a in agents if any(f"-{a.pid}-" in (h or "") for h in holders)]
    for agent in frozen:
        agent.signal(signal.SIGSTOP)

    async def failed(job_ids: list[str]) -> bool:
        views = [await client.get(j) for j in job_ids]
        return all(v is not None and v.status == "failed" for v in views)

    await eventually(lambda: failed(long_ids), timeout=30, what="the frozen steps fail")
    for agent in frozen:  # they wake up to find their leases gone
        agent.signal(signal.SIGCONT)
    for job_id in cancel_ids:
        await client.cancel(job_id)

    outcomes = await asyncio.gather(*(client.wait(j, timeout=60) for j in ids))
    ended = Counter(o.status for o in outcomes)
    assert set(ended) <= JOB_TERMINAL
    assert ended == Counter(
        {"succeeded": 60, "compensated": 8, "failed": 6 + 4 + 4, "cancelled": 3}
    ), ended

    async def counted() -> Counter[str] | None:
        total: Counter[str] = Counter()
        for port in ports:
            total += finished_by_status(await scrape(port))
        return total if total == ended else None

    await eventually(counted, timeout=15, what="the fleet's jobs_finished_total")
    # Each kind of process ended some: agents the echoes (their last success ends them),
    # supervisors the frozen and the unclaimed steps' jobs (and any outcome a frozen agent
    # recorded but did not announce), schedulers the rest.
    by_role: dict[str, Counter[str]] = {}
    for service, port in zip(services, ports, strict=True):
        by_role.setdefault(service.role, Counter()).update(finished_by_status(await scrape(port)))
    assert by_role["agent"] == Counter({"succeeded": 60})
    assert by_role["supervisor"]["failed"] >= 8
    assert by_role["scheduler"].total() > 0
    assert set(by_role["scheduler"]) <= {"compensated", "failed", "cancelled"}
