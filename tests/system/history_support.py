"""What the system tests read from a job's history, and the three services most start."""

from __future__ import annotations

import time

import msgspec

from sasfleet.shared.messages.submit import StepSpec
from sasfleet.shared.state.views import HistoryEntry, JobView
from sasfleet.shared.statemachine import JOB_TERMINAL

# A scheduler, a supervisor and an agent of the example handlers (8 slots).
TRIO = (
    ("scheduler", ()),
    ("supervisor", ()),
    ("agent", ("sasfleet.examples.tasks", "--concurrency", "8")),
)


def events(history: list[HistoryEntry], event: str, **match: object) -> list[HistoryEntry]:
    """The entries of ``event`` whose fields equal ``match``."""
    return [
        h for h in history if h.event == event and all(getattr(h, k) == v for k, v in match.items())
    ]


def job_end(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """The job's own terminal transition(s) (no step): succeed, failed, compensated..."""
    return [h for h in history if h.step is None and h.status in JOB_TERMINAL]


def written_by(entry: HistoryEntry, role: str, pid: int) -> bool:
    """Whether ``entry`` was written by the ``role`` process with this pid."""
    return entry.by.startswith(f"{role}-") and f"-{pid}-" in entry.by


def now_ms() -> int:
    """Wall-clock ms, the clock of the job histories."""
    return int(time.time() * 1000)


def with_options(steps: list[StepSpec], index: int, **options: object) -> list[StepSpec]:
    """``steps`` with step ``index`` given extra step options (retry policy, attempts...)."""
    out = list(steps)
    out[index] = msgspec.structs.replace(out[index], **options)
    return out


async def view_of(client, job_id: str) -> JobView:
    """The job document of ``job_id``, which must exist."""
    view = await client.get(job_id)
    assert view is not None, f"job {job_id} is not in Redis"
    return view
