"""``sasfleet bench``: N one-step echo jobs through the real services, measured.

Prints the exact configuration, throughput (first submit to last completion) and latency
percentiles (submit to the client learning the end). Compare ratios within one run: the
machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import uuid
from dataclasses import dataclass

import click
from rich.table import Table

from sasfleet.cli.render import console as make_console
from sasfleet.examples.tasks import order_job
from sasfleet.shared.client import Client
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.submit import SubmitJob
from sasfleet.tools.cpu import broker_pids, cpu_seconds
from sasfleet.tools.fleet import LocalFleet
from sasfleet.tools.purge import purge_fleet
from sasfleet.tools.workload import RunResult, run_workload


def echo_jobs(n: int) -> list[SubmitJob]:
    """One-step echo jobs with a small JSON payload."""
    return [SubmitJob(task="echo", payload={"n": i, "pad": "x" * 64}) for i in range(n)]


def order_jobs(n: int, failure_share: float = 0.1) -> list[SubmitJob]:
    """Three-step order jobs; ``failure_share`` of them fail at the last step (so two
    compensations run) and every step fails 5% of its attempts (so retries run)."""
    jobs = []
    for i in range(n):
        fail_step = "ship" if i % round(1 / failure_share) == 0 else ""
        jobs.append(
            SubmitJob(steps=order_job(f"o{i}", fail_rate=0.05, fail_step=fail_step, max_attempts=6))
        )
    return jobs


@dataclass
class BenchRun:
    result: RunResult
    cpu_s: dict[str, float]  # CPU seconds by process kind during the measured run


async def bench_once(
    settings: Settings,
    workload: list[SubmitJob],
    agents: int,
    concurrency: int,
    in_flight: int,
    batch_size: int = 1,
) -> BenchRun:
    fleet = LocalFleet(settings, env={"SASFLEET_RETRY_INITIAL_S": "0.05"})
    try:
        fleet.scheduler()
        fleet.supervisor()
        for _ in range(agents):
            fleet.agent(concurrency=concurrency)
        async with Client(settings) as client:
            # Warm up connections, queues and script caches outside the measurement.
            await run_workload(client, workload[: min(100, len(workload))], in_flight=in_flight)
            kinds = {p.role: [] for p in fleet.processes}  # type: dict[str, list[int]]
            for p in fleet.processes:
                kinds[p.role].append(p.pid)
            kinds.update(broker_pids())
            kinds["client"] = [os.getpid()]
            before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in kinds.items()}
            result = await run_workload(
                client, workload, in_flight=in_flight, batch_size=batch_size
            )
            cpu = {k: sum(cpu_seconds(p) for p in pids) - before[k] for k, pids in kinds.items()}
            return BenchRun(result, cpu)
    finally:
        fleet.stop_all()


_WORKLOADS = {"echo": echo_jobs, "order": order_jobs}


@click.command()
@click.option("--jobs", "-n", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--in-flight",
    default=512,
    show_default=True,
    type=click.IntRange(1),
    help="Submit messages awaiting their publisher confirm at once.",
)
@click.option(
    "--batch",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Jobs per submit message (Client.submit_many); 1: a message per job.",
)
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 20))
@click.option(
    "--workload",
    type=click.Choice(sorted(_WORKLOADS)),
    default="echo",
    show_default=True,
    help="echo: one-step jobs; order: three-step jobs, 10% of "
    "them compensated, 5% of attempts retried.",
)
@settings_options
def bench(
    jobs: int,
    agents: int,
    concurrency: int,
    in_flight: int,
    batch: int,
    rounds: int,
    workload: str,
    settings: Settings,
) -> None:
    """Benchmark jobs end to end through scheduler, agents and supervisor."""
    console = make_console()
    console.print(
        f"sasfleet bench -n {jobs} --workload {workload} --agents {agents} "
        f"--concurrency {concurrency} --in-flight {in_flight} --batch {batch} --rounds {rounds}\n"
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
        f"1 scheduler, 1 supervisor, {agents} agent processes; durable: quorum queues, "
        "persistent messages, publisher confirms, ack after record, state in Redis"
    )
    table = Table()
    for col in (
        "round",
        "jobs",
        "final states",
        "seconds",
        "jobs/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "CPU s / 1k jobs",
    ):
        table.add_column(col, justify="right")
    expected = "succeeded" if workload == "echo" else None
    all_ok = True
    for r in range(1, rounds + 1):
        run_settings = settings.model_copy(
            update={"prefix": f"{settings.prefix}-bench-{uuid.uuid4().hex[:6]}"}
        )
        try:
            run = asyncio.run(
                bench_once(
                    run_settings,
                    _WORKLOADS[workload](jobs),
                    agents,
                    concurrency,
                    in_flight,
                    batch,
                )
            )
        finally:
            asyncio.run(purge_fleet(run_settings))
        result, states = run.result, run.result.by_status()
        all_ok &= sum(states.values()) == jobs and (expected is None or states[expected] == jobs)
        cpu = ", ".join(f"{k} {v * 1000 / jobs:.2f}" for k, v in sorted(run.cpu_s.items()))
        table.add_row(
            str(r),
            str(jobs),
            " ".join(f"{k}={v}" for k, v in sorted(states.items())),
            f"{result.elapsed_s:.2f}",
            f"{result.throughput:.0f}",
            f"{result.percentile_ms(50):.1f}",
            f"{result.percentile_ms(95):.1f}",
            f"{result.percentile_ms(99):.1f}",
            cpu,
        )
    console.print(table)
    sys.exit(0 if all_ok else 1)
