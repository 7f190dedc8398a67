"""``python -m bench.memory``: does an agent's memory stay flat over many jobs?

Runs ``--jobs`` one-step echo jobs through a local fleet (scheduler, supervisor, one agent)
in batches, and samples each service's resident set size (VmRSS in /proc/<pid>/status)
after a warm-up and after every batch. Exits non-zero when the agent's RSS grew by more than
``--max-growth`` percent from the first post-warm-up sample to the last, or when a job did
not succeed. The scheduler's and supervisor's figures are informational.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sasfleet.shared.client import Client
from sasfleet.shared.config import Settings, load_settings
from sasfleet.tools.bench import echo_jobs
from sasfleet.tools.fleet import LocalFleet, ServiceProcess
from sasfleet.tools.purge import purge_fleet
from sasfleet.tools.workload import run_workload

ROLES = ("agent", "scheduler", "supervisor")


def rss_kib(pid: int) -> int:
    """The process's resident set size in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Sample:
    """RSS of every service (KiB) after ``jobs`` measured jobs; ``rate`` is the jobs/s of
    the batch that ended here (0 for the post-warm-up sample)."""

    jobs: int
    rss: dict[str, int]
    rate: float = 0.0


@dataclass
class MemoryRun:
    samples: list[Sample] = field(default_factory=list)
    not_succeeded: int = 0

    def growth_pct(self, role: str) -> float:
        first, last = self.samples[0].rss[role], self.samples[-1].rss[role]
        return (last - first) * 100 / first


def _sample(services: dict[str, ServiceProcess], jobs: int, rate: float = 0.0) -> Sample:
    return Sample(jobs, {role: rss_kib(p.pid) for role, p in services.items()}, rate)


async def _batch(client: Client, n: int, in_flight: int) -> tuple[int, float]:
    """Run ``n`` echo jobs; returns how many did not succeed, and the jobs/s."""
    result = await run_workload(client, echo_jobs(n), in_flight=in_flight)
    return n - result.by_status()["succeeded"], result.throughput


async def measure(
    settings: Settings,
    jobs: int,
    batch: int,
    warmup: int,
    concurrency: int,
    in_flight: int,
    console: Console,
) -> MemoryRun:
    """Start the fleet, warm it up, run ``jobs`` jobs in batches, sampling RSS."""
    # Finished jobs expire within the hour even if the purge below never runs.
    fleet = LocalFleet(settings, env={"SASFLEET_JOB_TTL_S": "3600"})
    run = MemoryRun()
    try:
        services = {
            "scheduler": fleet.scheduler(),
            "supervisor": fleet.supervisor(),
            "agent": fleet.agent(concurrency=concurrency),
        }
        async with Client(settings) as client:
            failed, _ = await _batch(client, warmup, in_flight)
            run.not_succeeded += failed
            run.samples.append(_sample(services, 0))
            done = 0
            while done < jobs:
                n = min(batch, jobs - done)
                failed, rate = await _batch(client, n, in_flight)
                run.not_succeeded += failed
                done += n
                run.samples.append(_sample(services, done, rate))
                agent_mib = run.samples[-1].rss["agent"] / 1024
                console.print(f"  {done} jobs, agent RSS {agent_mib:.1f} MiB, {rate:.0f} jobs/s")
    finally:
        fleet.stop_all()
        await purge_fleet(settings)
        shutil.rmtree(fleet.workdir, ignore_errors=True)
    return run


def render(run: MemoryRun) -> Table:
    """The RSS series, one row per sample, and the growth from the first to the last."""
    table = Table(title="Service RSS (MiB) after warm-up and after each batch")
    table.add_column("jobs after warm-up", justify="right")
    for role in ROLES:
        table.add_column(f"{role} MiB", justify="right")
    table.add_column("batch jobs/s", justify="right")
    for s in run.samples:
        table.add_row(
            str(s.jobs),
            *(f"{s.rss[role] / 1024:.1f}" for role in ROLES),
            f"{s.rate:.0f}" if s.rate else "-",
        )
    table.add_row("growth", *(f"{run.growth_pct(role):+.1f}%" for role in ROLES), "")
    return table


@click.command()
@click.option("--jobs", "-n", default=100_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=None,
    help="Jobs between samples [default: a tenth of --jobs].",
)
@click.option("--warmup", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option("--in-flight", default=512, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-growth",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Largest acceptable agent RSS growth, percent.",
)
def main(
    jobs: int,
    batch: int | None,
    warmup: int,
    concurrency: int,
    in_flight: int,
    max_growth: float,
) -> None:
    """Sample the services' RSS while many one-step jobs run through one agent."""
    batch = batch or max(1, jobs // 10)
    settings = load_settings()
    settings = settings.model_copy(
        update={"prefix": f"{settings.prefix}-memory-{uuid.uuid4().hex[:6]}"}
    )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(
        f"python -m bench.memory --jobs {jobs} --batch {batch} --warmup {warmup} "
        f"--concurrency {concurrency} --in-flight {in_flight} --max-growth {max_growth:g}\n"
        f"python {platform.python_version()}, {os.cpu_count()} cores; 1 scheduler, "
        "1 supervisor, 1 agent; one-step echo jobs"
    )
    run = asyncio.run(measure(settings, jobs, batch, warmup, concurrency, in_flight, console))
    console.print(render(run))
    growth = run.growth_pct("agent")
    console.print(
        f"agent RSS growth {growth:+.1f}% (limit {max_growth:g}%): "
        f"{'ok' if growth <= max_growth else 'TOO MUCH'}; "
        f"jobs that did not succeed: {run.not_succeeded}"
    )
    sys.exit(0 if growth <= max_growth and run.not_succeeded == 0 else 1)


if __name__ == "__main__":
    main()
