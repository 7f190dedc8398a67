"""``python -m bench.recovery``: how soon work held by a killed or hung worker runs again.

SAS Fleet: an agent running ``--in-flight`` steps is SIGKILLed (or SIGSTOPped) while a
second agent stands by; the delay of a step is from the signal to the job history's claim
of its next attempt by the other agent. Celery (late acks, reject on worker lost, prefork):
the worker's main process is SIGKILLed, or one pool process, or the whole worker is
SIGSTOPped; a replacement worker is started at once (not for the pool-process kill, where
the same worker carries on); the delay is from the signal to the task's next start, as
recorded by the task body. Every figure is the median over ``--repeats`` runs.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import platform
import sys
from collections.abc import Iterator

import click
from rich.console import Console
from rich.table import Table

from bench import recovery_celery, recovery_sasfleet
from bench.recovery_model import FaultRun, FaultSummary, summarise
from sasfleet.shared.config import Settings, load_settings

SYSTEMS = ("sasfleet", "celery")


def run_sasfleet(settings: Settings, k: int, work_s: float, repeats: int) -> Iterator[FaultRun]:
    """Every SAS Fleet fault, ``repeats`` times."""
    for fault in recovery_sasfleet.FAULTS:
        for _ in range(repeats):
            yield asyncio.run(recovery_sasfleet.run_fault(settings, fault, k, work_s))


def run_celery(
    settings: Settings, k: int, work_s: float, cap_s: float, repeats: int, concurrency: int
) -> Iterator[FaultRun]:
    """Every Celery fault, ``repeats`` times, on the fleet's broker and Redis."""
    broker = settings.amqp_url.get_secret_value()
    backend = settings.redis_url.get_secret_value()
    for fault in recovery_celery.FAULTS:
        for _ in range(repeats):
            yield recovery_celery.run_fault(fault, broker, backend, k, work_s, cap_s, concurrency)


def progress(run: FaultRun, cap_s: float) -> str:
    """One line per run, so a long benchmark shows where it is."""
    return (
        f"  {run.system} {run.fault}: {run.recovered}/{run.in_flight} ran again, "
        f"p50 {_seconds(run.p50(), cap_s)}, max {_seconds(run.max(), cap_s)}, "
        f"all finished: {'yes' if run.all_finished else 'NO'}"
    )


def _seconds(value: float, cap_s: float) -> str:
    if math.isinf(value):
        return f"not recovered within {cap_s:g} s"
    return "-" if math.isnan(value) else f"{value:.2f}"


def render(summaries: list[FaultSummary], cap_s: float) -> Table:
    """The results table: one row per (system, fault)."""
    table = Table(title="Recovery of in-flight work after a worker fault (medians of repeats)")
    for col in ("system", "fault", "steps in flight", "recovered", "p50 s", "max s"):
        table.add_column(col, justify="left" if col in ("system", "fault") else "right")
    table.add_column("all jobs finished?")
    for s in summaries:
        table.add_row(
            s.system,
            s.fault,
            str(s.in_flight),
            s.recovered,
            _seconds(s.p50(), cap_s),
            _seconds(s.max(), cap_s),
            "yes" if s.all_finished else "NO",
        )
    return table


def notes(summaries: list[FaultSummary], settings: Settings) -> list[str]:
    """Measured context for the table: detection delays, replacement start-up, targets."""
    lines = []
    for s in summaries:
        failed = s.note("fail")
        if failed is not None:
            lines.append(
                f"{s.system} {s.fault}: first lost attempt failed by the supervisor "
                f"{failed:.2f} s after the signal (median)"
            )
        detect = s.note("detect")
        if detect is not None:
            lines.append(
                f"{s.system} {s.fault}: first retry dispatched (after the step's backoff) "
                f"{detect:.2f} s after the signal (median)"
            )
        deliver = s.note("deliver max")
        if deliver is not None:
            lines.append(
                f"{s.system} {s.fault}: longest retry dispatch to claim {deliver:.2f} s (median)"
            )
        ready = s.note("replacement ready")
        if ready is not None:
            lines.append(
                f"{s.system} {s.fault}: replacement worker ready {ready:.2f} s after the "
                "signal (median)"
            )
    bound = settings.agent_timeout_s + 1
    for s in summaries:
        if s.system != recovery_sasfleet.SYSTEM:
            continue
        if s.fault == "SIGKILL agent":
            verdict = "met" if s.p50() <= 1.0 else "MISSED"
            lines.append(f"target SIGKILL p50 <= 1 s: {verdict} ({s.p50():.2f} s)")
        else:
            verdict = "met" if s.max() <= bound else "MISSED"
            lines.append(
                f"target SIGSTOP max <= agent_timeout_s + 1 = {bound:g} s: {verdict} "
                f"({s.max():.2f} s)"
            )
    return lines


@click.command()
@click.option("--in-flight", default=16, show_default=True, type=click.IntRange(1, 500))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option(
    "--systems",
    default=",".join(SYSTEMS),
    show_default=True,
    help="Comma-separated: " + ", ".join(SYSTEMS),
)
@click.option(
    "--work-s", default=5.0, show_default=True, type=click.FloatRange(1), help="Step length."
)
@click.option(
    "--cap-s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Longest wait for a Celery task to run again.",
)
@click.option("--celery-concurrency", default=2, show_default=True, type=click.IntRange(1, 64))
def main(
    in_flight: int,
    repeats: int,
    systems: str,
    work_s: float,
    cap_s: float,
    celery_concurrency: int,
) -> None:
    """Measure recovery of in-flight work after SIGKILL and SIGSTOP of a worker."""
    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(unknown)}", param_hint="--systems")
    settings = load_settings()
    console = Console(width=None if sys.stdout.isatty() else 130)
    console.print(
        f"python -m bench.recovery --in-flight {in_flight} --repeats {repeats} "
        f"--systems {','.join(chosen)} --work-s {work_s:g} --cap-s {cap_s:g}\n"
        f"python {platform.python_version()}, {os.cpu_count()} cores; SAS Fleet: "
        f"supervisor_tick_s={settings.supervisor_tick_s:g}, heartbeat_s={settings.heartbeat_s:g}, "
        f"agent_timeout_s={settings.agent_timeout_s:g}, lease_s={settings.lease_s:g}; "
        f"Celery: prefork {celery_concurrency}, acks_late, reject_on_worker_lost, "
        "prefetch multiplier 1"
    )
    batches: list[Iterator[FaultRun]] = []
    if "sasfleet" in chosen:
        batches.append(run_sasfleet(settings, in_flight, work_s, repeats))
    if "celery" in chosen:
        batches.append(run_celery(settings, in_flight, work_s, cap_s, repeats, celery_concurrency))
    runs: list[FaultRun] = []
    for run in itertools.chain.from_iterable(batches):
        console.print(progress(run, cap_s))
        runs.append(run)
    summaries = summarise(runs)
    console.print(render(summaries, cap_s))
    for line in notes(summaries, settings):
        console.print(line)
    lost = any(not r.all_finished for r in runs if r.system == recovery_sasfleet.SYSTEM)
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
