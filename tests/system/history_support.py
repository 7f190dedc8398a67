"""What the system tests read from a job's history, and the three services most start."""

from __future__ import annotations

import re
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


def compensation_dispatches(view: JobView) -> list[HistoryEntry]:
    """The entries that started a compensation: its step's first ``dispatch`` (pending to
    dispatched), in the order they happened."""
    compensations = {s.index for s in view.steps if s.compensates is not None}
    return [
        h
        for h in events(view.history, "dispatch")
        if h.step in compensations and (h.previous, h.status) == ("pending", "dispatched")
    ]


def retry_delay_ms(entry: HistoryEntry) -> int:
    """The backoff a ``retry_later`` entry set ("retry in N ms")."""
    found = re.fullmatch(r"retry in (\d+) ms", entry.detail or "")
    assert entry.event == "retry_later" and found, entry
    return int(found.group(1))


def timed_out_and_retried(
    history: list[HistoryEntry], step: int, attempt: int
) -> tuple[HistoryEntry, HistoryEntry, HistoryEntry]:
    """How a deadline of ``attempt`` of ``step`` was handled: the supervisor failed the
    attempt (``timeout_fail``) and followed the failure with its backoff at once
    (``retry_later``, written by the same supervisor), then a scheduler's timer dispatched
    the next attempt under a new lease (``retry``); each once, in that order."""
    (fail,) = events(history, "timeout_fail", step=step, attempt=attempt)
    (wait,) = events(history, "retry_later", step=step, attempt=attempt)
    (retry,) = events(history, "retry", step=step, attempt=attempt + 1)
    assert history.index(fail) < history.index(wait) < history.index(retry)
    assert fail.by.startswith("supervisor-") and wait.by == fail.by, (fail, wait)
    assert fail.status == "failed" and fail.previous in ("dispatched", "running"), fail
    assert (wait.previous, wait.status, wait.lease) == ("failed", "waiting_retry", fail.lease)
    assert retry.by.startswith("scheduler-"), retry
    assert (retry.previous, retry.status) == ("waiting_retry", "dispatched"), retry
    assert retry.lease > fail.lease
    assert retry.ts - wait.ts >= retry_delay_ms(wait)
    return fail, wait, retry


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
