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
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sasfleet.shared.client import Client
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.submit import SubmitJob
from sasfleet.shared.tools.fleet import LocalFleet
from sasfleet.shared.tools.purge import purge_fleet
from sasfleet.shared.tools.workload import RunResult, run_workload


async def bench_once(
    settings: Settings, jobs: int, agents: int, concurrency: int, in_flight: int
) -> RunResult:
    fleet = LocalFleet(settings, cwd=Path.cwd())
    try:
        fleet.scheduler()
        fleet.supervisor()
        for _ in range(agents):
            fleet.agent(concurrency=concurrency)
        workload = [SubmitJob(task="echo", payload={"n": i, "pad": "x" * 64}) for i in range(jobs)]
        async with Client(settings) as client:
            # Warm up connections, queues and script caches outside the measurement.
            await run_workload(client, workload[: min(100, jobs)], in_flight=in_flight)
            return await run_workload(client, workload, in_flight=in_flight)
    finally:
        fleet.stop_all()


@click.command()
@click.option("--jobs", "-n", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--in-flight",
    default=512,
    show_default=True,
    type=click.IntRange(1),
    help="Submissions awaiting their publisher confirm at once.",
)
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 20))
@settings_options
def bench(
    jobs: int, agents: int, concurrency: int, in_flight: int, rounds: int, settings: Settings
) -> None:
    """Benchmark one-step echo jobs end to end through scheduler, agents and supervisor."""
    console = Console()
    console.print(
        f"sasfleet bench -n {jobs} --agents {agents} --concurrency {concurrency} "
        f"--in-flight {in_flight} --rounds {rounds}\n"
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
        f"1 scheduler, 1 supervisor, {agents} agent processes; durable: quorum queues, "
        "persistent messages, publisher confirms, ack after record, state in Redis"
    )
    table = Table()
    for col in ("round", "jobs", "ok", "seconds", "jobs/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="right")
    all_ok = True
    for r in range(1, rounds + 1):
        run_settings = settings.model_copy(
            update={"prefix": f"{settings.prefix}-bench-{uuid.uuid4().hex[:6]}"}
        )
        try:
            result = asyncio.run(bench_once(run_settings, jobs, agents, concurrency, in_flight))
        finally:
            asyncio.run(purge_fleet(run_settings))
        ok = result.by_status().get("succeeded", 0)
        all_ok &= ok == jobs
        table.add_row(
            str(r),
            str(jobs),
            str(ok),
            f"{result.elapsed_s:.2f}",
            f"{result.throughput:.0f}",
            f"{result.percentile_ms(50):.1f}",
            f"{result.percentile_ms(95):.1f}",
            f"{result.percentile_ms(99):.1f}",
        )
    console.print(table)
    sys.exit(0 if all_ok else 1)
