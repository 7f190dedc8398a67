"""What one recovery run measured, and how repeats of it are summarised."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

NOT_RECOVERED = math.inf  # the delay of a step that did not run again within the cap


def now_ms() -> int:
    """Wall-clock milliseconds: the clock of SAS Fleet's history and of the Celery probes."""
    return time.time_ns() // 1_000_000


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class FaultRun:
    """One fault injected once: the delay (s) from the fault until each step that was in
    flight started again elsewhere (``NOT_RECOVERED`` when it did not within the cap)."""

    system: str
    fault: str
    delays_s: list[float] = field(default_factory=list)
    all_finished: bool = False
    notes: dict[str, float] = field(default_factory=dict)  # extra measured figures, seconds

    @property
    def in_flight(self) -> int:
        return len(self.delays_s)

    @property
    def recovered(self) -> int:
        return sum(1 for d in self.delays_s if d != NOT_RECOVERED)

    def p50(self) -> float:
        return percentile(self.delays_s, 50)

    def max(self) -> float:
        return max(self.delays_s, default=math.nan)


@dataclass
class FaultSummary:
    """Repeats of one (system, fault), summarised by medians over the repeats."""

    system: str
    fault: str
    runs: list[FaultRun]

    @property
    def in_flight(self) -> int:
        return round(statistics.median(r.in_flight for r in self.runs))

    @property
    def recovered(self) -> str:
        got = sum(r.recovered for r in self.runs)
        of = sum(r.in_flight for r in self.runs)
        return f"{got}/{of}"

    @property
    def all_finished(self) -> bool:
        return all(r.all_finished for r in self.runs)

    def p50(self) -> float:
        return statistics.median(r.p50() for r in self.runs)

    def max(self) -> float:
        return statistics.median(r.max() for r in self.runs)

    def note(self, name: str) -> float | None:
        """Median over the repeats of an extra figure (None when no run measured it)."""
        values = [r.notes[name] for r in self.runs if name in r.notes]
        return statistics.median(values) if values else None


def summarise(runs: Sequence[FaultRun]) -> list[FaultSummary]:
    """Group runs by (system, fault), in the order they first appear."""
    groups: dict[tuple[str, str], list[FaultRun]] = {}
    for run in runs:
        groups.setdefault((run.system, run.fault), []).append(run)
    return [FaultSummary(system, fault, rs) for (system, fault), rs in groups.items()]
