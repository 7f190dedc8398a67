"""The tables: medians over rounds of every phase, CPU per job, and SAS Fleet's ratios.

Every figure comes from the run's own measurements; a system with no valid run in a
phase shows "-".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bench.model import PEERS, Measurement, Phase, RunSpec
from bench.stats import median
from bench.systems import System

SERVICE_KINDS = ("scheduler", "supervisor", "agent", "worker", "consumer")


@dataclass
class Results:
    """Every measurement of one invocation."""

    runs: list[Measurement]

    def of(self, system: str, phase: Phase) -> list[Measurement]:
        return [m for m in self.runs if m.system == system and m.phase == phase]

    def valid(self, system: str, phase: Phase) -> list[Measurement]:
        """Runs that produced figures (a stalled run still did, for the jobs it saw)."""
        return [m for m in self.of(system, phase) if m.completed > 0 and m.elapsed_s > 0]

    def median(self, system: str, phase: Phase, value: Callable[[Measurement], float]) -> float:
        """Median of ``value`` over the valid runs; 0.0 if there are none."""
        return median([value(m) for m in self.valid(system, phase)])

    def throughput(self, system: str, phase: Phase) -> float:
        return self.median(system, phase, lambda m: m.throughput)

    def p99(self, system: str, phase: Phase) -> float:
        return self.median(system, phase, lambda m: m.p99_ms)

    def lost(self) -> int:
        return sum(m.lost for m in self.runs)


def _n(value: float) -> str:
    return "-" if value <= 0 else f"{value:,.0f}"


def _ms(value: float) -> str:
    if value <= 0:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(value: float, reference: float) -> str:
    return "-" if value <= 0 or reference <= 0 else f"{value / reference:.2f}x"


def _ok(runs: Sequence[Measurement]) -> str:
    text = f"{sum(m.completed for m in runs):,}/{sum(m.submitted for m in runs):,}"
    return text if all(m.lost == 0 for m in runs) else f"[red]{text}[/red]"


def _rounds(runs: Sequence[Measurement], value: Callable[[Measurement], float]) -> str:
    return " / ".join(_n(value(m)) if m.completed else "x" for m in runs)


def systems_table(systems: Sequence[System], spec: RunSpec) -> Table:
    table = Table(title="Systems (same RabbitMQ and Redis, one after another)")
    for col in ("system", "workers", "durability", "producer"):
        table.add_column(col)
    for s in systems:
        table.add_row(s.label, s.workers, s.durability, s.producer(spec))
    return table


def e2e_table(results: Results, systems: Sequence[System]) -> Table:
    table = _numbers_table(
        "e2e: all jobs offered at once (first submit -> last completion seen)",
        ("system", "ok", "jobs/s", "rounds", "p50 ms", "p95 ms", "p99 ms", "of raw"),
    )
    raw = results.throughput("raw", "e2e")
    for s in systems:
        runs = results.of(s.name, "e2e")
        if not runs:
            continue
        rate = results.throughput(s.name, "e2e")
        table.add_row(
            s.label,
            _ok(runs),
            _n(rate),
            _rounds(runs, lambda m: m.throughput),
            _ms(results.median(s.name, "e2e", lambda m: m.p50_ms)),
            _ms(results.median(s.name, "e2e", lambda m: m.p95_ms)),
            _ms(results.p99(s.name, "e2e")),
            "-" if raw <= 0 or rate <= 0 else f"{rate / raw:.0%}",
        )
    return table


def cpu_table(results: Results, systems: Sequence[System], phase: Phase) -> Table:
    table = Table(title=f"CPU seconds per 1,000 jobs ({phase}, median over rounds)")
    for col in ("system", "producer (client)", "service processes", "RabbitMQ", "Redis", "total"):
        table.add_column(col, justify="left" if col in ("system", "service processes") else "right")
    for s in systems:
        runs = results.valid(s.name, phase)
        if not runs:
            continue
        kinds = sorted({k for m in runs for k in m.cpu_s})

        def per_1k(kind: str, runs: list[Measurement] = runs) -> float:
            return median([m.cpu_per_1k().get(kind, 0.0) for m in runs])

        services = [k for k in SERVICE_KINDS if k in kinds]
        detail = " + ".join(f"{k} {per_1k(k):.2f}" for k in services)
        if len(services) > 1:
            detail += f" = {sum(per_1k(k) for k in services):.2f}"
        table.add_row(
            s.label,
            f"{per_1k('producer'):.2f}",
            detail,
            f"{per_1k('rabbitmq'):.2f}",
            f"{per_1k('redis'):.2f}",
            f"{sum(per_1k(k) for k in kinds):.2f}",
        )
    return table


def _numbers_table(title: str, columns: Sequence[str]) -> Table:
    """A table whose first column names the system and the others hold figures."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col == "system" else "right")
    return table


def drain_table(results: Results, systems: Sequence[System]) -> Table:
    table = _numbers_table(
        "drain: all jobs queued first, then the workers started",
        ("system", "ok", "jobs/s", "rounds", "start -> 1st done s", "jobs/s after 1st"),
    )
    for s in systems:
        runs = results.of(s.name, "drain")
        if not runs:
            continue

        def steady(m: Measurement) -> float:
            busy = m.elapsed_s - m.startup_s
            return (m.completed - 1) / busy if busy > 0 and m.completed > 1 else 0.0

        table.add_row(
            s.label,
            _ok(runs),
            _n(results.throughput(s.name, "drain")),
            _rounds(runs, lambda m: m.throughput),
            f"{results.median(s.name, 'drain', lambda m: m.startup_s):.2f}",
            _n(results.median(s.name, "drain", steady)),
        )
    return table


def load_table(results: Results, systems: Sequence[System], rate: float) -> Table:
    table = _numbers_table(
        f"load: open loop at {rate:,.0f} jobs/s offered (latency from schedule)",
        ("system", "ok", "offered/s", "done/s", "p50 ms", "p95 ms", "p99 ms", "max lag ms"),
    )
    for s in systems:
        runs = results.of(s.name, "load")
        if not runs:
            continue
        table.add_row(
            s.label,
            _ok(runs),
            _n(results.median(s.name, "load", lambda m: m.offered_rate)),
            _n(results.throughput(s.name, "load")),
            _ms(results.median(s.name, "load", lambda m: m.p50_ms)),
            _ms(results.median(s.name, "load", lambda m: m.p95_ms)),
            _ms(results.p99(s.name, "load")),
            _ms(results.median(s.name, "load", lambda m: m.max_lag_ms)),
        )
    return table


def multistep_table(results: Results, systems: Sequence[System]) -> Table:
    table = _numbers_table(
        "multistep: three echo steps per job (all offered at once)",
        ("system", "ok", "jobs/s", "rounds", "p50 ms", "p99 ms"),
    )
    for s in systems:
        runs = results.of(s.name, "multistep")
        if not runs:
            continue
        table.add_row(
            s.label,
            _ok(runs),
            _n(results.throughput(s.name, "multistep")),
            _rounds(runs, lambda m: m.throughput),
            _ms(results.median(s.name, "multistep", lambda m: m.p50_ms)),
            _ms(results.p99(s.name, "multistep")),
        )
    return table


def ratio_table(results: Results, systems: Sequence[System]) -> Table:
    table = Table(title="SAS Fleet / peer (medians of this run)")
    for col in (
        "peer",
        "e2e jobs/s",
        "drain jobs/s",
        "multistep jobs/s",
        "p99 at load (<1: SAS Fleet lower)",
    ):
        table.add_column(col, justify="left" if col == "peer" else "right")
    for s in systems:
        if s.name not in PEERS:
            continue
        table.add_row(
            s.label,
            *(
                _ratio(results.throughput("sasfleet", ph), results.throughput(s.name, ph))
                for ph in ("e2e", "drain", "multistep")
            ),
            _ratio(results.p99("sasfleet", "load"), results.p99(s.name, "load")),
        )
    return table


def raw_share(results: Results) -> str:
    """SAS Fleet's e2e jobs/s as a share of raw round trips/s, or "" without both."""
    sas, raw = results.throughput("sasfleet", "e2e"), results.throughput("raw", "e2e")
    if sas <= 0 or raw <= 0:
        return ""
    return (
        f"SAS Fleet reaches {sas / raw:.0%} of the raw durable round trip: "
        f"{sas:,.0f} jobs/s / {raw:,.0f} round trips/s (e2e medians)."
    )


def print_all(
    console: Console,
    results: Results,
    systems: Sequence[System],
    phases: Sequence[Phase],
    load_rate: float,
) -> None:
    """Every table of the phases that ran."""
    if "e2e" in phases:
        console.print(e2e_table(results, systems))
        console.print(cpu_table(results, systems, "e2e"))
        share = raw_share(results)
        if share:
            console.print(share)
    if "drain" in phases:
        console.print(drain_table(results, systems))
    if "load" in phases and load_rate > 0:
        console.print(load_table(results, systems, load_rate))
        console.print(cpu_table(results, systems, "load"))
    if "multistep" in phases:
        console.print(multistep_table(results, systems))
    if any(s.name == "sasfleet" for s in systems) and any(s.name in PEERS for s in systems):
        console.print(ratio_table(results, systems))
