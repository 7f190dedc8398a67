"""``sasfleet scale``: the same workload through 1, 2, 4, 8... agent processes, measured.

Each agent count runs once under a fresh prefix (purged afterwards) through
:func:`~sasfleet.tools.bench.bench_once`: one scheduler, one supervisor and N agent
processes against the local RabbitMQ and Redis. One table row per count: throughput,
latency, CPU seconds per 1,000 jobs and CPU utilisation (CPU seconds / wall seconds, so 1.0
is one core busy) of every process kind, their sum against the machine's cores, and the CPU
that other processes on the machine used meanwhile (read from ``/proc/stat``), which tells a
disturbed run from a saturated one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from sasfleet.cli.render import console as make_console
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.tools.bench import BenchRun, bench_once, echo_jobs
from sasfleet.tools.purge import purge_fleet

# Process kinds in table order; kinds a run measured beyond these are appended.
KINDS = ("scheduler", "supervisor", "agent", "rabbitmq", "redis", "client")
MAX_AGENTS = 64
# Cores other processes may keep busy before a run counts as disturbed.
DISTURBED_CORES = 0.2
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_counts(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` -> ``(1, 2, 4, 8)``; each count 1..MAX_AGENTS, no duplicates."""
    counts: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_AGENTS:
            raise ValueError(f"{part!r} is not an agent count from 1 to {MAX_AGENTS}")
        if int(part) in counts:
            raise ValueError(f"{part} is given twice")
        counts.append(int(part))
    return tuple(counts)


def _counts_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Click callback of ``--agents-counts``."""
    try:
        return parse_counts(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@dataclass(frozen=True)
class ScaleRow:
    """What one agent count measured, in the table's units."""

    agents: int
    jobs: int
    succeeded: int
    elapsed_s: float
    throughput: float  # jobs per second
    p50_ms: float
    p99_ms: float
    cpu_per_1k: dict[str, float]  # CPU seconds per 1,000 jobs, by process kind
    utilisation: dict[str, float]  # CPU seconds / wall seconds, by process kind
    total: float  # sum of ``utilisation``: cores our processes kept busy
    cores: int
    machine: float | None  # cores busy machine-wide during the run (/proc/stat), if known

    @property
    def other(self) -> float | None:
        """Cores that processes outside the fleet (other tests, ...) kept busy meanwhile."""
        return None if self.machine is None else max(0.0, self.machine - self.total)

    @property
    def ok(self) -> bool:
        return self.succeeded == self.jobs


def scale_row(agents: int, run: BenchRun, cores: int, machine_busy_s: float | None) -> ScaleRow:
    """The table row of one run: per-1k CPU and utilisation from its CPU seconds and wall
    time. ``machine_busy_s`` is the machine-wide busy CPU seconds over the same window."""
    result = run.result
    elapsed = result.elapsed_s
    jobs = len(result.outcomes)
    per_1k = {k: (v * 1000 / jobs if jobs else 0.0) for k, v in run.cpu_s.items()}
    util = {k: (v / elapsed if elapsed > 0 else 0.0) for k, v in run.cpu_s.items()}
    machine = None
    if machine_busy_s is not None and elapsed > 0:
        machine = machine_busy_s / elapsed
    return ScaleRow(
        agents=agents,
        jobs=jobs,
        succeeded=result.by_status()["succeeded"],
        elapsed_s=elapsed,
        throughput=result.throughput,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        cpu_per_1k=per_1k,
        utilisation=util,
        total=sum(util.values()),
        cores=cores,
        machine=machine,
    )


def machine_busy_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds all cores have been busy since boot (not idle, not waiting for I/O);
    None where ``/proc/stat`` is unavailable."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest is already counted in user)
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICKS


def busy_between(samples: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Busy CPU seconds between ``start`` and ``end`` from ``(time, busy seconds)`` samples
    in time order, linearly interpolated; None unless the samples cover the window."""
    if len(samples) < 2 or start < samples[0][0] or end > samples[-1][0] or end < start:
        return None

    def at(t: float) -> float:
        for (t0, b0), (t1, b1) in itertools.pairwise(samples):
            if t0 <= t <= t1:
                return b0 if t1 == t0 else b0 + (b1 - b0) * (t - t0) / (t1 - t0)
        return samples[-1][1]

    return at(end) - at(start)


class _BusySampler:
    """Samples the machine-wide busy CPU (``time.perf_counter`` stamps, like the workload's
    ``RunResult``) in a thread, so the measured window can be cut out afterwards."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="busy-sampler", daemon=True)

    def _sample(self) -> None:
        busy = machine_busy_seconds()
        if busy is not None:
            self.samples.append((time.perf_counter(), busy))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> _BusySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


async def _within(run: Coroutine[Any, Any, BenchRun], timeout_s: float) -> BenchRun | None:
    """The run's result, or None when it did not end within ``timeout_s``. The run is then
    cancelled (its processes are stopped); a run whose workload had finished and which only
    hung on the way out (see docs/scaling.md) still returns its figures."""
    try:
        return await asyncio.wait_for(run, timeout_s)
    except TimeoutError:
        return None


def _kinds(rows: Sequence[ScaleRow]) -> list[str]:
    seen = {k for r in rows for k in r.utilisation}
    return [k for k in KINDS if k in seen] + sorted(seen - set(KINDS))


def render_table(rows: Sequence[ScaleRow]) -> Table:
    """One row per agent count; each kind's cell is ``CPU s per 1k jobs / utilisation``."""
    kinds = _kinds(rows)
    table = Table(caption="kind cells: CPU s per 1k jobs / utilisation (1.0 = one core busy)")
    for col in ("agents", "jobs ok", "s", "jobs/s", "x", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for kind in kinds:
        table.add_column(kind, justify="right")
    table.add_column("ours / cores", justify="right")
    table.add_column("others", justify="right")
    base = rows[0].throughput if rows and rows[0].throughput > 0 else None
    for r in rows:
        cells = [
            str(r.agents),
            f"{r.succeeded}/{r.jobs}",
            f"{r.elapsed_s:.2f}",
            f"{r.throughput:.0f}",
            f"{r.throughput / base:.2f}" if base else "-",
            f"{r.p50_ms:.0f}",
            f"{r.p99_ms:.0f}",
        ]
        for kind in kinds:
            if kind in r.utilisation:
                cells.append(f"{r.cpu_per_1k[kind]:.2f} / {r.utilisation[kind]:.2f}")
            else:
                cells.append("-")
        cells.append(f"{r.total:.2f} / {r.cores}")
        cells.append("-" if r.other is None else f"{r.other:.2f}")
        table.add_row(*cells)
    return table


@click.command()
@click.option("--jobs", "-n", default=3000, show_default=True, type=click.IntRange(1))
@click.option(
    "--agents-counts",
    "counts",
    default="1,2,4,8",
    show_default=True,
    callback=_counts_option,
    help="Agent process counts to run, in order.",
)
@click.option(
    "--concurrency",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Steps each agent runs at once.",
)
@click.option(
    "--in-flight",
    default=512,
    show_default=True,
    type=click.IntRange(1),
    help="Submissions awaiting their publisher confirm at once.",
)
@click.option(
    "--run-timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds one agent count may take before it is cancelled; a count left without "
    "figures fails the command.",
)
@settings_options
def scale(
    jobs: int,
    counts: tuple[int, ...],
    concurrency: int,
    in_flight: int,
    run_timeout: float,
    settings: Settings,
) -> None:
    """Scale test: the same echo workload through each agent count, one machine."""
    console = make_console()
    cores = os.cpu_count() or 1
    console.print(
        f"sasfleet scale --jobs {jobs} --agents-counts {','.join(map(str, counts))} "
        f"--concurrency {concurrency} --in-flight {in_flight} --run-timeout {run_timeout:g}\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; python {platform.python_version()} on "
        f"{platform.machine()}, {cores} cores; 1 scheduler, 1 supervisor, N agent processes "
        f"x {concurrency} concurrent steps; one-step echo jobs; one client process"
    )
    rows: list[ScaleRow] = []
    timed_out: list[int] = []
    for n in counts:
        run_settings = settings.model_copy(
            update={"prefix": f"{settings.prefix}-scale{n}-{uuid.uuid4().hex[:6]}"}
        )
        try:
            with _BusySampler() as sampler:
                run = asyncio.run(
                    _within(
                        bench_once(run_settings, echo_jobs(jobs), n, concurrency, in_flight),
                        run_timeout,
                    )
                )
        finally:
            asyncio.run(purge_fleet(run_settings))
        if run is None:
            timed_out.append(n)
            console.print(f"[red]{n} agents: no result within {run_timeout:g} s[/red]")
            continue
        busy = busy_between(sampler.samples, run.result.started, run.result.finished)
        rows.append(scale_row(n, run, cores, busy))
        console.print(f"{n} agents: {rows[-1].throughput:.0f} jobs/s")
    console.print(render_table(rows))
    for r in rows:
        if r.other is not None and r.other > DISTURBED_CORES:
            console.print(
                f"[yellow]{r.agents} agents: other processes kept {r.other:.2f} cores busy "
                "during the run (and may have loaded RabbitMQ and Redis too): run again on a "
                "quieter machine[/yellow]"
            )
    sys.exit(0 if all(r.ok for r in rows) and not timed_out else 1)
