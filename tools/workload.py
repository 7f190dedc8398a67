"""Drives a workload through a client and measures it: latencies, throughput, outcomes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sasfleet.cli.stats import percentile
from sasfleet.shared.client import Client, JobOutcome
from sasfleet.shared.messages.submit import SubmitJob


@dataclass
class RunResult:
    """What a workload run measured (times from ``time.perf_counter``)."""

    started: float
    finished: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return self.finished - self.started

    @property
    def throughput(self) -> float:
        return len(self.outcomes) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def by_status(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes.values())

    def percentile_ms(self, p: float) -> float:
        return percentile(self.latencies_s, p) * 1000


async def run_workload(
    client: Client,
    jobs: Sequence[SubmitJob],
    *,
    in_flight: int = 512,
    batch_size: int = 1,
    wait_timeout_s: float = 600.0,
    on_done: Callable[[JobOutcome], None] | None = None,
) -> RunResult:
    """Submit ``jobs`` and wait for all of them: ``batch_size`` jobs to a message, at most
    ``in_flight`` messages awaiting their publisher confirm at once.

    Latency is from just before a job's (batch's) submit to the moment the client learns
    the job ended.
    """
    result = RunResult(started=time.perf_counter())
    gate = asyncio.Semaphore(in_flight)

    async def wait(job_id: str, t0: float) -> None:
        outcome = await client.wait(job_id, wait_timeout_s)
        result.latencies_s.append(time.perf_counter() - t0)
        result.outcomes[job_id] = outcome
        if on_done is not None:
            on_done(outcome)

    async def one(group: Sequence[SubmitJob]) -> None:
        async with gate:
            t0 = time.perf_counter()
            if batch_size > 1:
                ids = await client.submit_many(group, batch_size=batch_size)
            else:
                ids = [await client.submit_job(group[0])]
        await asyncio.gather(*(wait(job_id, t0) for job_id in ids))

    size = max(1, batch_size)
    await asyncio.gather(*(one(jobs[i : i + size]) for i in range(0, len(jobs), size)))
    result.finished = time.perf_counter()
    return result
