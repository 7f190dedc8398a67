"""``python -m bench.compare`` (``make bench-compare``): SAS Fleet beside Celery,
Dramatiq, taskiq and a raw aio-pika round trip, on the same RabbitMQ and Redis.

Each system runs every phase ``--rounds`` times, one run at a time in a child process
(:mod:`bench.child`), the order rotating from round to round so that drift on a shared
machine does not always favour the same system; the tables show medians. Exits 1 if any
system lost a job (completions verified in its result store < submissions) or a run
failed. See docs/benchmarks.md.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from bench.header import loadavg, print_header, sasfleet_revision
from bench.model import PEERS, PHASES, SYSTEMS, Measurement, Phase, RunSpec
from bench.report import Results, print_all, systems_table
from bench.runs import clean_after, run_child
from bench.systems import System, catalogue
from sasfleet.shared.config import load_settings

# Phases in the order they run: e2e first, since the load phase's rate derives from it.
ORDER: tuple[Phase, ...] = ("e2e", "drain", "load", "multistep")


def _csv(
    allowed: tuple[str, ...],
) -> Callable[[click.Context, click.Parameter, str], tuple[str, ...]]:
    """A click callback: a comma-separated subset of ``allowed``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise click.BadParameter(f"{', '.join(unknown)}: choose from {', '.join(allowed)}")
        return items

    return parse


def describe(m: Measurement) -> str:
    """One run's progress line."""
    text = (
        f"{m.completed}/{m.submitted} ok, {m.throughput:,.0f} jobs/s, p99 {m.p99_ms:,.0f} ms"
        if m.completed
        else "no figures"
    )
    if m.phase == "load":
        text += f", offered {m.offered_rate:,.0f}/s"
    return text + (f" [red]{m.error}[/red]" if m.error else "")


def load_rate_from(results: Results, systems: list[str]) -> tuple[float, str]:
    """Half the best peer's median e2e throughput (or, without a peer, the best system's)."""
    candidates = [s for s in systems if s in PEERS] or [s for s in systems if s != "raw"]
    rates = {s: results.throughput(s, "e2e") for s in candidates}
    best = max(rates, key=lambda s: rates[s], default="")
    if not best or rates[best] <= 0:
        return 0.0, ""
    kind = "peer" if best in PEERS else "system (no peer ran)"
    return rates[best] / 2, f"50% of the best {kind}'s e2e median, {best} {rates[best]:,.0f}/s"


def run_round_robin(
    console: Console,
    base: RunSpec,
    phase: Phase,
    systems: list[System],
    rounds: int,
    results: Results,
    revisions: list[str],
) -> bool:
    """Every system of ``systems`` through ``phase``, ``rounds`` times, the order rotated
    by one each round. Returns False if a run failed or lost jobs. ``revisions`` collects
    the SAS Fleet code revisions the runs used (the code may change while this runs)."""
    ok = True
    for r in range(rounds):
        shift = r % len(systems) if systems else 0
        for system in systems[shift:] + systems[:shift]:
            spec = replace(
                base,
                system=system.name,
                phase=phase,
                round=r + 1,
                steps=3 if phase == "multistep" else 1,
                prefix=f"bench-{system.name}-{uuid.uuid4().hex[:8]}",
            )
            if system.name.startswith("sasfleet"):
                revision = sasfleet_revision()
                if revision not in revisions:
                    revisions.append(revision)
                    if len(revisions) > 1:
                        console.print(f"[yellow]  SAS Fleet code is now {revision}[/yellow]")
            try:
                m, err = run_child(spec)
            finally:
                problem = clean_after(spec)
            if problem:
                m.error = f"{m.error}; {problem}" if m.error else problem
            results.runs.append(m)
            console.print(f"  {phase} {r + 1}/{rounds} {system.label}: {describe(m)}")
            if m.error or m.lost:
                ok = False
                if err.strip():
                    console.print(err.strip()[-3000:], markup=False)
    return ok


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--jobs", "-n", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option(
    "--systems",
    default=",".join(SYSTEMS),
    show_default=True,
    callback=_csv(SYSTEMS),
    help="Comma-separated subset.",
)
@click.option(
    "--skip", default="", callback=_csv(PHASES), help="Phases to skip, e.g. drain,multistep."
)
@click.option(
    "--load-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Offered jobs/s of the load phase [default: 50% of the best peer's e2e median].",
)
@click.option("--in-flight", default=512, show_default=True, type=click.IntRange(1))
@click.option(
    "--producer-threads",
    default=16,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Threads of the Celery and Dramatiq producers (their confirms are one at a time).",
)
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--queue-type",
    type=click.Choice(["quorum", "classic"]),
    default="quorum",
    show_default=True,
    help="Queue type of the peers and the raw run (SAS Fleet always uses quorum queues).",
)
@click.option("--stall-timeout", default=120.0, show_default=True, type=click.FloatRange(1))
def main(
    jobs: int,
    rounds: int,
    systems: tuple[str, ...],
    skip: tuple[str, ...],
    load_rate: float | None,
    in_flight: int,
    producer_threads: int,
    agents: int,
    concurrency: int,
    queue_type: str,
    stall_timeout: float,
) -> None:
    """SAS Fleet beside Celery, Dramatiq and taskiq on the same broker and Redis."""
    # Wide enough for the tables when the output goes to a file or a pipe.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    chosen = [s for s in SYSTEMS if s in systems]  # table order, whatever the flag's order
    phases = [p for p in ORDER if p not in skip]
    if "load" in phases and load_rate is None and "e2e" not in phases:
        raise click.UsageError("the load phase takes its rate from e2e: give --load-rate")
    settings = load_settings()
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    base = RunSpec(
        system="",
        phase="e2e",
        round=0,
        jobs=jobs,
        steps=1,
        prefix="",
        amqp_url=settings.amqp_url.get_secret_value(),
        redis_url=settings.redis_url.get_secret_value(),
        workdir=str(workdir),
        queue_type=queue_type,
        in_flight=in_flight,
        producer_threads=producer_threads,
        agents=agents,
        concurrency=concurrency,
        stall_timeout_s=stall_timeout,
    )
    info = catalogue(base)
    shown = [info[s] for s in chosen]

    revisions = [sasfleet_revision()]
    print_header(console, base, rounds, phases, revisions[0])
    console.print(systems_table(shown, base))
    for s in shown:
        if s.skipped_why and any(p not in s.phases for p in phases):
            console.print(f"{s.label} skips {s.skipped_why}")

    results = Results([])
    ok = True
    for phase in phases:
        if phase == "load":
            rate, why = (load_rate, "--load-rate") if load_rate else load_rate_from(results, chosen)
            if rate <= 0:
                console.print("[red]load phase skipped: no e2e throughput to derive a rate[/red]")
                continue
            console.print(f"load phase: {rate:,.0f} jobs/s offered ({why})")
            base = replace(base, rate=rate)
        taking_part = [s for s in shown if phase in s.phases]
        ok &= run_round_robin(console, base, phase, taking_part, rounds, results, revisions)

    console.print()
    print_all(console, results, shown, phases, base.rate)
    console.print(
        f"load average at the end: {loadavg()}. 2-core shared machine: compare ratios "
        "within one run."
    )
    if len(revisions) > 1:
        console.print(
            f"[yellow]SAS Fleet's code changed during this run: {' -> '.join(revisions)}; "
            "its figures mix those versions.[/yellow]"
        )
    lost = results.lost()
    if lost or not ok:
        console.print(f"[red]FAILED: {lost} job(s) lost over all runs; logs in {workdir}[/red]")
        sys.exit(1)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
