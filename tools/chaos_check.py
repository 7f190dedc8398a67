"""The chaos suite's verdict: every invariant checked on every job, and the recovery times.

Per job: it exists (no accepted job is lost) and has exactly one terminal state, the one its
payload decides; a SUCCEEDED job has the expected result; every step that succeeded has
exactly one success in its history, and its committed (fenced) effect carries the lease of
that success: no effect of a stale lease stands; every compensation ran to success at most
once per succeeded step, and exactly once where the job compensated; no attempt ends twice
and no failure is followed twice (one end per lease, one backoff per failed lease, one retry
per attempt: two supervisors never fail or follow the same deadline twice). Executions of
one idempotency key beyond the planned ones (one, plus the retryable failures its payload
asks for) are duplicates: allowed (at-least-once), counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sasfleet.shared.state.views import HistoryEntry, JobView
from sasfleet.shared.statemachine import JOB_TERMINAL
from sasfleet.tools.chaos_faults import Fault
from sasfleet.tools.chaos_workload import PlannedJob


@dataclass
class Records:
    """What the chaos handlers wrote to Redis (see ``chaos_tasks``)."""

    executions: set[str]  # "idempotency key|token|attempt|kind|agent"
    effects: dict[str, str]  # "job:step" -> "token|total"
    undone: dict[str, str]  # "job:step" -> "token|total" (written by its compensation)
    refused: dict[str, str]  # "job:step" -> fenced writes refused


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    by_status: Counter[str] = field(default_factory=Counter)
    executions: int = 0
    planned_retries: int = 0  # executions of steps told to fail retryably first
    duplicated_executions: int = 0  # executions beyond the planned ones per idempotency key
    keys_executed_more_than_once: int = 0
    stale_results_rejected: int = 0
    fenced_writes_refused: int = 0
    compensations: int = 0
    compensation_reruns: int = 0  # compensation handler executions beyond one per step
    supervisor_timeouts: int = 0  # attempts a supervisor failed at a deadline (then followed)
    supervisor_follow_ups: int = 0  # recorded outcomes no one took up in time, followed up
    republished: int = 0  # dispatches whose publisher did not confirm them, handed out again

    @property
    def ok(self) -> bool:
        return not self.lost and not self.violations


def _token(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    token, _, total = value.partition("|")
    return int(token), int(total)


def job_ends(history: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    """The job's own terminal transitions (no step)."""
    return [h for h in history if h.step is None and h.status in JOB_TERMINAL]


# A running or dispatched attempt ends by one of these (a timeout_fail from "failed" only
# retypes a failure that ran out of time; from "waiting_retry", the backoff outlived it).
_ENDS_AN_ATTEMPT = frozenset({"succeed", "fail", "timeout_fail", "cancel"})


def _followed_twice(history: list[HistoryEntry]) -> list[str]:
    """An attempt (one lease) that ended twice, a failure followed by two backoffs, or an
    attempt dispatched twice as a retry."""
    ends = Counter(
        (e.step, e.lease)
        for e in history
        if e.event in _ENDS_AN_ATTEMPT and e.previous in ("dispatched", "running")
    )
    waits = Counter((e.step, e.lease) for e in history if e.event == "retry_later")
    retries = Counter((e.step, e.attempt) for e in history if e.event == "retry")
    problems = [
        f"step {s} lease {lease} ended {n} times" for (s, lease), n in ends.items() if n > 1
    ]
    problems += [
        f"step {s}: the failure of lease {lease} was followed {n} times (retry_later)"
        for (s, lease), n in waits.items()
        if n > 1
    ]
    problems += [
        f"step {s}: attempt {a} dispatched {n} times as a retry"
        for (s, a), n in retries.items()
        if n > 1
    ]
    return problems


def supervisor_recoveries(history: Iterable[HistoryEntry]) -> Counter[str]:
    """What supervisors did to a job, one count per recovery (one script run: the entries
    one supervisor wrote at one instant): ``timeout`` (an attempt failed at a deadline and
    followed), ``republish`` (a dispatch handed out again), ``follow_up`` (a recorded
    outcome that no one took up, followed)."""
    runs: dict[tuple[str, int], set[str]] = defaultdict(set)
    for e in history:
        if e.by.startswith("supervisor-"):
            runs[(e.by, e.ts)].add(e.event)
    kinds: Counter[str] = Counter()
    for written in runs.values():
        if "timeout_fail" in written:
            kinds["timeout"] += 1
        elif "republish" in written:
            kinds["republish"] += 1
        else:
            kinds["follow_up"] += 1
    return kinds


def check_job(job: PlannedJob, view: JobView, records: Records) -> list[str]:
    """Every invariant of one job; returns what is wrong (empty: all hold)."""
    problems: list[str] = []
    jid, h = job.job_id, view.history
    ends = job_ends(h)
    if view.status not in JOB_TERMINAL:
        problems.append(f"not terminal: {view.status}")
    if len(ends) != 1:
        problems.append(f"{len(ends)} terminal events: {[e.status for e in ends]}")
    elif ends[0].status != view.status:
        problems.append(f"terminal event {ends[0].status} but status {view.status}")
    if view.status != job.expected_status:
        problems.append(f"ended {view.status}, expected {job.expected_status} ({view.error})")
    if job.expected_result is not None and view.result != job.expected_result:
        problems.append(f"result {view.result!r}, expected {job.expected_result!r}")
    forward = {s.index: s for s in view.steps if s.compensates is None}
    comps = {s.compensates: s for s in view.steps if s.compensates is not None}
    for i in range(job.nsteps):
        step = forward.get(i)
        wins = [e for e in h if e.event == "succeed" and e.step == i]
        effect = _token(records.effects.get(f"{jid}:{i}"))
        if job.fail_at is None or i < job.fail_at:
            if step is None or step.status != "succeeded":
                problems.append(f"step {i} is {step.status if step else 'missing'}")
                continue
            if step.result != {"n": job.n, "step": i, "acc": job.acc(i)}:
                problems.append(f"step {i} result {step.result!r}")
            if [e.lease for e in wins] != [step.lease]:
                problems.append(
                    f"step {i}: successes {[e.lease for e in wins]}, lease {step.lease}"
                )
            if effect != (step.lease, job.acc(i)):
                problems.append(
                    f"step {i}: committed effect {effect} is not the succeeded lease's "
                    f"({step.lease}, {job.acc(i)}): a stale commit stands"
                )
        elif i == job.fail_at:
            if step is None or step.status != "failed" or wins:
                problems.append(f"step {i} should have failed: {step.status if step else None}")
            if effect is not None:
                problems.append(f"step {i} failed but an effect was committed: {effect}")
        elif step is not None and step.status != "pending":
            problems.append(f"step {i} after the failed one ran: {step.status}")
    for of, ran in comps.items():
        wins = [e for e in h if e.event == "succeed" and e.step == ran.index]
        if of not in job.compensated_steps:
            problems.append(f"compensation of step {of}, which must not be compensated")
        if len(wins) > 1:
            problems.append(f"compensation of step {of} succeeded {len(wins)} times")
    for of in job.compensated_steps:
        comp = comps.get(of)
        if comp is None or comp.status != "succeeded":
            problems.append(f"step {of} not compensated ({comp.status if comp else 'missing'})")
            continue
        undone = _token(records.undone.get(f"{jid}:{of}"))
        if undone != (comp.lease, job.acc(of)):
            problems.append(
                f"compensation of step {of}: committed {undone}, expected "
                f"({comp.lease}, {job.acc(of)})"
            )
    problems.extend(_followed_twice(h))
    by_index = {s.index: s for s in view.steps}
    for e in h:
        if e.event == "stale_result_rejected" and e.step is not None:
            current = by_index.get(e.step)
            if current is None or e.lease is None or e.lease >= current.lease:
                problems.append(f"stale result of step {e.step} lease {e.lease} is not stale")
    return problems


def verify(plan: list[PlannedJob], views: dict[str, JobView | None], records: Records) -> Verdict:
    verdict = Verdict()
    for job in plan:
        view = views.get(job.job_id)
        if view is None:
            verdict.lost.append(job.job_id)
            verdict.by_status["lost"] += 1
            continue
        verdict.by_status[view.status] += 1
        verdict.violations.extend(f"{job.job_id}: {p}" for p in check_job(job, view, records))
        verdict.stale_results_rejected += sum(
            e.event == "stale_result_rejected" for e in view.history
        )
        recoveries = supervisor_recoveries(view.history)
        verdict.supervisor_timeouts += recoveries["timeout"]
        verdict.supervisor_follow_ups += recoveries["follow_up"]
        verdict.republished += recoveries["republish"]
        verdict.compensations += sum(s.compensates is not None for s in view.steps)
    # Executions beyond those the plan calls for (one per step, plus its planned retryable
    # failures) are duplicates caused by the faults: allowed (at-least-once), counted.
    planned: dict[str, int] = {}
    for job in plan:
        for i in range(job.nsteps):
            planned[f"{job.job_id}:{i}"] = 1 + job.flaky[i]
    per_key = Counter(x.split("|", 1)[0] for x in records.executions)
    verdict.executions = len(records.executions)
    verdict.planned_retries = sum(min(c, planned.get(k, 1)) - 1 for k, c in per_key.items())
    extra = {k: c - planned.get(k, 1) for k, c in per_key.items() if c > planned.get(k, 1)}
    verdict.duplicated_executions = sum(extra.values())
    verdict.keys_executed_more_than_once = len(extra)
    undo = Counter(x.split("|", 1)[0] for x in records.executions if x.split("|")[3] == "undo")
    verdict.compensation_reruns = sum(c - 1 for c in undo.values())
    verdict.fenced_writes_refused = sum(int(v) for v in records.refused.values())
    return verdict


# --------------------------------------------------------------------------- timings


@dataclass
class Timings:
    """Seconds from each fault to the fleet's recovery, by fault kind, and the detection
    of dead (SIGKILL) and hung (SIGSTOP) agents per step they held."""

    recovery: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unrecovered: Counter[str] = field(default_factory=Counter)
    # agent faults whose victim held no running step at the signal (nothing to recover)
    idle: Counter[str] = field(default_factory=Counter)
    # per agent fault: signal -> first new attempt of a step the victim held
    detection: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # per step the victim held: signal -> its new attempt starting
    detection_per_step: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def timings(faults: list[Fault], views: Iterable[JobView | None]) -> Timings:
    ends: list[int] = []
    agent_ids: dict[int, set[str]] = defaultdict(set)
    claims: dict[tuple[str, int, int], HistoryEntry] = {}
    # Attempts a supervisor failed at their deadline (a lost lease, among others).
    timeouts: list[tuple[str, HistoryEntry]] = []
    pids = {f.pid for f in faults if f.pid is not None}
    for view in views:
        if view is None:
            continue
        for e in view.history:
            if e.step is None and e.status in JOB_TERMINAL:
                ends.append(e.ts)
            elif e.event == "claim" and e.step is not None and e.attempt is not None:
                claims[(view.job_id, e.step, e.attempt)] = e
                for pid in pids:
                    if e.by.startswith("agent-") and f"-{pid}-" in e.by:
                        agent_ids[pid].add(e.by)
            elif (
                e.event == "timeout_fail"
                and e.by.startswith("supervisor-")
                and e.previous in ("dispatched", "running")
            ):
                timeouts.append((view.job_id, e))
    ends.sort()
    result = Timings()
    for f in faults:
        seconds: float | None = None
        if f.kind in ("agent-kill", "agent-stop") and f.pid is not None:
            # The steps the victim held at the signal: its claim of attempt n came before
            # the signal, a supervisor failed attempt n after it (its lease ran out), and
            # attempt n + 1 (the retry that followed) was claimed.
            ids = agent_ids.get(f.pid, set())
            held = []
            for job_id, e in timeouts:
                if e.step is None or e.attempt is None or e.ts < f.started_ms:
                    continue
                before = claims.get((job_id, e.step, e.attempt))
                after = claims.get((job_id, e.step, e.attempt + 1))
                if before and after and before.by in ids and before.ts < f.started_ms:
                    held.append(after.ts - f.started_ms)
            if not held:
                result.idle[f.kind] += 1
                continue
            seconds = min(held) / 1000
            result.detection[f.kind].append(seconds)
            result.detection_per_step[f.kind].extend(x / 1000 for x in held)
        elif f.kind == "garbage":
            if f.dead_lettered_ms is not None:
                seconds = (f.dead_lettered_ms - f.started_ms) / 1000
        else:
            since = f.ended_ms if f.kind.endswith("restart") else f.started_ms
            nxt = next((t for t in ends if t >= since), None)
            if nxt is not None:
                seconds = (nxt - f.started_ms) / 1000
        if seconds is None:
            result.unrecovered[f.kind] += 1
        else:
            result.recovery[f.kind].append(seconds)
    return result


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
