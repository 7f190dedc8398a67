"""A chaos run's configuration and result, and its table: what was submitted and
injected, how jobs ended, what was duplicated, lost or violated, and how long the fleet took
to recover from each fault."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from sasfleet.tools.chaos_check import Timings, Verdict, median
from sasfleet.tools.chaos_faults import Fault
from sasfleet.tools.chaos_workload import FAULT_KINDS, PlannedJob


@dataclass(frozen=True)
class ChaosConfig:
    jobs: int = 2000
    faults: int = 22
    duration_s: float | None = None  # jobs and faults are spread over this (None: derived)
    agents: int = 4
    concurrency: int = 8
    seed: int = 1
    kinds: tuple[str, ...] = FAULT_KINDS
    drain_timeout_s: float = 300.0
    keep: bool = False

    @property
    def duration(self) -> float:
        return self.duration_s or max(6.0 * self.faults, self.jobs / 25)


@dataclass
class ChaosResult:
    config: ChaosConfig
    prefix: str
    plan: list[PlannedJob]
    accepted: set[str]
    faults: list[Fault]
    verdict: Verdict
    timings: Timings
    garbage_problems: list[str]
    service_problems: list[str]
    unfinished: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return (
            self.verdict.ok
            and not self.garbage_problems
            and not self.service_problems
            and not self.unfinished
        )


def render(result: ChaosResult, console: Console) -> None:
    v, t, c = result.verdict, result.timings, result.config
    table = Table(title=f"chaos run {result.prefix}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("jobs submitted (accepted)", f"{len(result.plan)} ({len(result.accepted)})")
    table.add_row("faults injected", str(len(result.faults)))
    kinds: dict[str, int] = {}
    for f in result.faults:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    for kind, count in kinds.items():
        table.add_row(f"  {kind}", str(count))
    for status, count in sorted(v.by_status.items()):
        table.add_row(f"jobs {status}", str(count))
    table.add_row("lost jobs (must be 0)", str(len(v.lost)))
    table.add_row("jobs not finished in time (must be 0)", str(result.unfinished))
    table.add_row("invariant violations (must be 0)", str(len(v.violations)))
    table.add_row(
        "handler executions recorded", f"{v.executions} ({v.planned_retries} planned retries)"
    )
    table.add_row(
        "duplicated executions (allowed, counted)",
        f"{v.duplicated_executions} ({v.keys_executed_more_than_once} idempotency keys)",
    )
    table.add_row("stale results rejected (history)", str(v.stale_results_rejected))
    table.add_row("stale writes refused by fencing", str(v.fenced_writes_refused))
    table.add_row("attempts failed at a deadline by supervisors", str(v.supervisor_timeouts))
    table.add_row("outcomes no one took up, followed by supervisors", str(v.supervisor_follow_ups))
    table.add_row("dispatches republished by supervisors", str(v.republished))
    table.add_row(
        "compensations run (handler re-runs, allowed)",
        f"{v.compensations} ({v.compensation_reruns})",
    )
    garbage = sum(len(f.garbage) for f in result.faults)
    table.add_row(
        "garbage dead-lettered with a reason",
        f"{garbage - len(result.garbage_problems)}/{garbage}",
    )
    table.add_row("services that died unexpectedly (must be 0)", str(len(result.service_problems)))
    table.add_row("wall time", f"{result.elapsed_s:.0f} s")
    console.print(table)

    rec = Table(title="time from fault to recovery (s)", title_justify="left")
    for col in ("fault", "n", "p50", "max", "recovered when"):
        rec.add_column(col, justify="right" if col in ("n", "p50", "max") else "left")
    when = {
        "agent-kill": "a step it held starts its new attempt",
        "agent-stop": "a step it held starts its new attempt",
        "garbage": "all of it is in the dead-letter queue",
    }
    for kind in kinds:
        values = t.recovery.get(kind, [])
        extra = []
        if t.idle[kind]:
            extra.append(f"{t.idle[kind]} held no step")
        if t.unrecovered[kind]:
            extra.append(f"{t.unrecovered[kind]} not measured")
        rec.add_row(
            kind,
            str(len(values)),
            f"{median(values):.2f}" if values else "-",
            f"{max(values):.2f}" if values else "-",
            when.get(kind, "the next job finishes") + (f" ({'; '.join(extra)})" if extra else ""),
        )
    for kind, label in (("agent-kill", "SIGKILLed"), ("agent-stop", "SIGSTOPped")):
        per_step = t.detection_per_step.get(kind, [])
        if per_step:
            rec.add_row(
                f"{label} agent, per step held",
                str(len(per_step)),
                f"{median(per_step):.2f}",
                f"{max(per_step):.2f}",
                "signal -> that step's new attempt starts",
            )
    console.print(rec)
    for line in (v.lost[:20] + v.violations[:30] + result.garbage_problems[:20])[:50]:
        console.print(f"[red]{line}[/red]")
    for line in result.service_problems[:5]:
        console.print(f"[red]{line}[/red]")
    ok = "[green]every invariant held[/green]" if result.ok else "[red]FAILED[/red]"
    console.print(f"{ok} ({c.jobs} jobs, {len(result.faults)} faults, seed {c.seed})")
