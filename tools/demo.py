"""``sasfleet demo``: a real workload through all three services, with an agent killed.

Starts a scheduler, a supervisor and two agents as separate OS processes, submits a mix
of one-step and three-step jobs, SIGKILLs one agent mid-run and starts a new one, shows
progress, then prints a summary and stops every process it started.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections import Counter

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sasfleet.cli.render import console as make_console
from sasfleet.examples.tasks import order_job
from sasfleet.shared.client import Client, JobOutcome
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.submit import SubmitJob
from sasfleet.shared.state.reads import JobReader
from sasfleet.tools.fleet import LocalFleet
from sasfleet.tools.purge import purge_fleet
from sasfleet.tools.workload import RunResult, run_workload


def demo_jobs(n: int, order_share: float, fail_rate: float, seed: int) -> list[SubmitJob]:
    """``n`` jobs: one-step echoes and three-step orders whose steps fail at ``fail_rate``."""
    rng = random.Random(seed)
    return [
        SubmitJob(steps=order_job(f"order-{i}", fail_rate=fail_rate, work_s=0.02, max_attempts=6))
        if rng.random() < order_share
        else SubmitJob(task="echo", payload={"n": i})
        for i in range(n)
    ]


async def _history_counts(settings: Settings, job_ids: list[str]) -> Counter[str]:
    """Counts of history events over the given jobs (who recovered what)."""
    client = Client(settings)
    reader = JobReader(client._redis, settings.prefix)
    counts: Counter[str] = Counter()
    try:
        for job_id in job_ids:
            view = await reader.job(job_id)
            if view is None:
                counts["missing"] += 1
                continue
            for h in view.history:
                key = h.event
                if h.event == "timeout_fail" and h.by.startswith("supervisor-"):
                    # The detail starts with the failure: "LeaseExpired: attempt 1: ..."
                    key = f"recovered by a supervisor ({(h.detail or '').split(':')[0]})"
                counts[key] += 1
    finally:
        await client._redis.aclose()
    return counts


async def run_demo(
    settings: Settings, jobs: int, agents: int, concurrency: int, kill_at: float, console: Console
) -> bool:
    fleet = LocalFleet(
        settings,
        env={
            "SASFLEET_LEASE_S": "2",
            "SASFLEET_RETRY_INITIAL_S": "0.1",
            "SASFLEET_ADVANCE_GRACE_S": "2",
        },
    )
    console.print(
        f"[bold]SAS Fleet demo[/bold] prefix [cyan]{settings.prefix}[/cyan], "
        f"logs in {fleet.workdir}"
    )
    try:
        fleet.scheduler()
        fleet.supervisor()
        workers = [fleet.agent(concurrency=concurrency) for _ in range(agents)]
        console.print(
            f"started scheduler, supervisor and {agents} agents "
            f"(pids {', '.join(str(p.pid) for p in fleet.processes)})"
        )
        workload = demo_jobs(jobs, order_share=0.3, fail_rate=0.05, seed=7)
        killed: list[str] = []

        async with Client(settings) as client:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                bar = progress.add_task("jobs finished", total=len(workload))

                def done(_: JobOutcome) -> None:
                    progress.advance(bar)
                    finished = progress.tasks[0].completed
                    if not killed and finished >= kill_at * len(workload):
                        victim = workers[0]
                        victim.kill()
                        killed.append(
                            f"SIGKILLed agent pid {victim.pid} at {int(finished)} jobs finished"
                        )
                        progress.console.print(killed[-1] + "; starting a replacement")
                        fleet.agent(concurrency=concurrency, wait=False)

                result = await run_workload(client, workload, on_done=done)
        counts = await _history_counts(settings, list(result.outcomes))
        _summary(console, result, counts, killed)
        return set(result.by_status()) == {"succeeded"}
    finally:
        codes = fleet.stop_all()
        console.print(
            f"stopped every process the demo started (exit codes: "
            f"{', '.join(f'{k}={v}' for k, v in codes.items())})"
        )


def _summary(console: Console, result: RunResult, history: Counter[str], killed: list[str]) -> None:
    table = Table(title="demo summary", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for status, count in sorted(result.by_status().items()):
        table.add_row(f"jobs {status}", str(count))
    table.add_row("wall time", f"{result.elapsed_s:.2f} s")
    table.add_row("throughput", f"{result.throughput:.0f} jobs/s")
    for p in (50, 95, 99):
        table.add_row(f"latency p{p}", f"{result.percentile_ms(p):.1f} ms")
    recoveries = sum(v for k, v in history.items() if k.startswith("recovered"))
    table.add_row("steps a supervisor recovered", str(recoveries))
    for key, value in sorted(history.items()):
        if key.startswith("recovered"):
            table.add_row(f"  {key}", str(value))
    table.add_row("failures retried after their backoff", str(history.get("retry_later", 0)))
    table.add_row("stale results rejected", str(history.get("stale_result_rejected", 0)))
    for line in killed:
        table.add_row("fault injected", line)
    console.print(table)


@click.command()
@click.option("--jobs", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--kill-at",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of jobs finished when an agent is SIGKILLed.",
)
@click.option("--keep", is_flag=True, help="Keep the demo's Redis state and queues.")
@settings_options
def demo(
    jobs: int, agents: int, concurrency: int, kill_at: float, keep: bool, settings: Settings
) -> None:
    """Run the demo workload through all three services; exit 0 only if every job
    succeeded."""
    console = make_console()
    settings = settings.model_copy(
        update={"prefix": f"{settings.prefix}-demo-{uuid.uuid4().hex[:6]}"}
    )
    ok = asyncio.run(run_demo(settings, jobs, agents, concurrency, kill_at, console))
    if keep:
        console.print(f"state kept: SASFLEET_PREFIX={settings.prefix} sasfleet jobs")
    else:
        asyncio.run(purge_fleet(settings))
    console.print(
        "[green]every job succeeded[/green]" if ok else "[red]not every job succeeded[/red]"
    )
    sys.exit(0 if ok else 1)
