"""SAS Fleet under an agent fault: how soon do the steps the agent held run again?

One agent takes every step (it is the only one running when they are submitted); a second
agent joins, then the first is SIGKILLed or SIGSTOPped. A step has run again when the job
history records a ``claim`` of a later attempt; the delay is that entry's ``ts`` minus the
moment of the fault (both wall-clock milliseconds on this machine).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import uuid

from bench.recovery_model import NOT_RECOVERED, FaultRun, now_ms
from sasfleet.shared.client import Client
from sasfleet.shared.config import Settings
from sasfleet.shared.errors import JobTimeout
from sasfleet.shared.messages.submit import SubmitJob
from sasfleet.shared.state.views import HistoryEntry, JobView
from sasfleet.tools.fleet import LocalFleet, ServiceProcess
from sasfleet.tools.purge import purge_fleet

SYSTEM = "SAS Fleet"
FAULTS = {"SIGKILL agent": signal.SIGKILL, "SIGSTOP agent": signal.SIGSTOP}


def sleep_jobs(n: int, work_s: float) -> list[SubmitJob]:
    """One-step jobs whose step sleeps ``work_s`` (the `sleep` task of sasfleet.examples.tasks)."""
    return [SubmitJob(task="sleep", payload={"seconds": work_s}) for _ in range(n)]


async def wait_all_running(client: Client, job_ids: list[str], timeout_s: float) -> str:
    """Wait until every job's first step runs; returns the agent id holding them all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        docs = await asyncio.gather(*(client.get(j) for j in job_ids))
        running = [d.steps[0] for d in docs if d and d.steps and d.steps[0].status == "running"]
        holders = {step.locked_by for step in running}
        if len(running) == len(job_ids) and len(holders) == 1:
            return str(holders.pop())
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{len(job_ids)} steps were not all running on one agent in {timeout_s}s")


def recovery_delay_s(doc: JobView | None, victim: str, fault_ms: int) -> float:
    """Seconds from the fault to the first claim of step 0 by another agent after it."""
    for entry in doc.history if doc is not None else []:
        if (
            entry.event == "claim"
            and entry.step == 0
            and entry.by != victim
            and entry.ts >= fault_ms
            and (entry.attempt or 0) >= 2
        ):
            return (entry.ts - fault_ms) / 1000
    return NOT_RECOVERED


def _first(doc: JobView | None, event: str, after_ms: int) -> HistoryEntry | None:
    """The first ``event`` of step 0 at or after ``after_ms``."""
    for entry in doc.history if doc is not None else []:
        if entry.event == event and entry.step == 0 and entry.ts >= after_ms:
            return entry
    return None


def _failed_and_retried(
    doc: JobView | None, fault_ms: int
) -> tuple[HistoryEntry | None, HistoryEntry | None]:
    """After the fault: the supervisor's ``timeout_fail`` of step 0's lost attempt, and the
    ``retry`` (a scheduler's timer, once the step's backoff ran out) that dispatched the
    next attempt; None for what did not happen."""
    failed = next(
        (
            e
            for e in (doc.history if doc is not None else [])
            if e.event == "timeout_fail"
            and e.step == 0
            and e.ts >= fault_ms
            and e.by.startswith("supervisor-")
        ),
        None,
    )
    if failed is None:
        return None, None
    retry = next(
        (
            e
            for e in (doc.history if doc is not None else [])
            if e.event == "retry"
            and e.step == 0
            and e.ts >= failed.ts
            and e.attempt == (failed.attempt or 0) + 1
        ),
        None,
    )
    return failed, retry


def failure_delay_s(doc: JobView | None, fault_ms: int) -> float | None:
    """Seconds from the fault to the supervisor's ``timeout_fail`` of step 0 (None: none)."""
    failed, _ = _failed_and_retried(doc, fault_ms)
    return None if failed is None else (failed.ts - fault_ms) / 1000


def detection_delay_s(doc: JobView | None, fault_ms: int) -> float | None:
    """Seconds from the fault to the dispatch of step 0's next attempt: the ``retry`` that
    followed the supervisor's ``timeout_fail`` of the lost one (None: none)."""
    _, retry = _failed_and_retried(doc, fault_ms)
    return None if retry is None else (retry.ts - fault_ms) / 1000


def delivery_delay_s(doc: JobView | None, fault_ms: int) -> float | None:
    """Seconds from that ``retry`` of step 0 to the next ``claim`` (None: no such pair):
    long when the broker handed the new attempt to the hung agent's consumer."""
    _, retry = _failed_and_retried(doc, fault_ms)
    claimed = None if retry is None else _first(doc, "claim", retry.ts)
    return None if retry is None or claimed is None else (claimed.ts - retry.ts) / 1000


async def _succeeded(client: Client, job_id: str, timeout_s: float) -> bool:
    try:
        return (await client.wait(job_id, timeout_s)).succeeded
    except JobTimeout:
        return False


def _inject(victim: ServiceProcess, sig: signal.Signals) -> int:
    fault_ms = now_ms()
    if sig == signal.SIGKILL:
        victim.kill()  # and reap, so the process is really gone
    else:
        victim.signal(sig)
    return fault_ms


async def _measure(
    fleet: LocalFleet, settings: Settings, run: FaultRun, k: int, work_s: float
) -> None:
    sig = FAULTS[run.fault]
    victim = fleet.agent(concurrency=k)
    async with Client(settings) as client:
        job_ids = await client.submit_many(sleep_jobs(k, work_s))
        holder = await wait_all_running(client, job_ids, timeout_s=60)
        fleet.agent(concurrency=k)  # the survivor: idle, ready to take the steps over
        fault_ms = _inject(victim, sig)
        finished = await asyncio.gather(*(_succeeded(client, j, 120 + 2 * work_s) for j in job_ids))
        docs = await asyncio.gather(*(client.get(j) for j in job_ids))
    victim.terminate()  # a stopped agent is resumed first (SIGCONT), then told to drain
    run.all_finished = all(finished)
    run.delays_s = [recovery_delay_s(d, holder, fault_ms) for d in docs]
    failed = [x for x in (failure_delay_s(d, fault_ms) for d in docs) if x is not None]
    if failed:
        run.notes["fail"] = min(failed)
    detected = [x for x in (detection_delay_s(d, fault_ms) for d in docs) if x is not None]
    if detected:
        run.notes["detect"] = min(detected)
    delivered = [x for x in (delivery_delay_s(d, fault_ms) for d in docs) if x is not None]
    if delivered:
        run.notes["deliver max"] = max(delivered)


async def run_fault(settings: Settings, fault: str, k: int, work_s: float) -> FaultRun:
    """Inject ``fault`` into an agent running ``k`` steps of ``work_s`` seconds; measure."""
    run_settings = settings.model_copy(
        update={"prefix": f"{settings.prefix}-recovery-{uuid.uuid4().hex[:6]}"}
    )
    run = FaultRun(SYSTEM, fault)
    fleet = LocalFleet(run_settings)
    try:
        fleet.scheduler()
        fleet.supervisor()
        await _measure(fleet, run_settings, run, k, work_s)
    finally:
        fleet.stop_all()
        await purge_fleet(run_settings)
        shutil.rmtree(fleet.workdir, ignore_errors=True)
    return run
