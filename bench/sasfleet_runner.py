"""SAS Fleet as a :class:`~bench.driver.Target`, through its public pieces only: a
``LocalFleet`` of real service processes and a ``Client``.

Sizing and method as ``sasfleet bench`` (``bench_once``): one scheduler, one supervisor,
2 agent processes with 32 concurrent steps each, 100 warm-up jobs, 512 submissions
awaiting their confirm at once, latency from the submit to ``Client.wait`` returning.
``bench_once`` itself is not called: it counts the CPU of every Erlang VM and
redis-server on the machine (tests beside the benchmark run private ones), and going
through the driver measures every system with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib

from bench.model import RunSpec
from bench.peers.env import payload
from bench.tracker import Tracker
from sasfleet.shared.client import Client
from sasfleet.shared.config import Settings, load_settings
from sasfleet.shared.messages.submit import StepSpec, SubmitJob
from sasfleet.tools.fleet import LocalFleet, ServiceProcess
from sasfleet.tools.purge import purge_fleet

# As bench_once: a failed attempt is retried quickly (no echo fails; it only matters if
# something goes wrong, and then the run should not idle in back-off).
FLEET_ENV = {"SASFLEET_RETRY_INITIAL_S": "0.05"}


def settings_for(spec: RunSpec) -> Settings:
    """The run's settings: its URLs and prefix over the SASFLEET_* variables (which
    apply as they do to the services LocalFleet starts)."""
    return load_settings(amqp_url=spec.amqp_url, redis_url=spec.redis_url, prefix=spec.prefix)


def job(n: int, steps: int) -> SubmitJob:
    """One-step echo job ``n``, or ``steps`` echo steps."""
    if steps == 1:
        return SubmitJob(task="echo", payload=payload(n))
    return SubmitJob(steps=[StepSpec(task="echo", payload=payload(n))] * steps)


class SasFleetTarget:
    """A fleet of real service processes and the client that submits to it."""

    def __init__(self, spec: RunSpec, coalesce: int = 100) -> None:
        self.spec = spec
        self.coalesce = coalesce  # Client(coalesce=...): jobs per submit message at most
        self.settings = settings_for(spec)
        self.width = spec.in_flight
        self.fleet = LocalFleet(self.settings, env=FLEET_ENV)
        self.client: Client | None = None
        self.tracker: Tracker | None = None
        self.succeeded: set[str] = set()
        self.waits: set[asyncio.Task[None]] = set()

    async def open(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.client = Client(self.settings, coalesce=self.coalesce)
        await self.client.connect()

    def start_workers(self) -> None:
        # Not waiting for readiness here: in the drain phase the clock runs from now.
        self.fleet.scheduler(wait=False)
        self.fleet.supervisor(wait=False)
        for _ in range(self.spec.agents):
            self.fleet.agent(concurrency=self.spec.concurrency, wait=False)

    async def ready(self) -> None:
        services: list[ServiceProcess] = list(self.fleet.processes)
        await asyncio.gather(*(asyncio.to_thread(self.fleet.wait_ready, s) for s in services))

    async def _wait(self, job_id: str) -> None:
        assert self.client is not None and self.tracker is not None
        outcome = await self.client.wait(job_id, timeout=3600)
        if outcome.succeeded:
            self.succeeded.add(job_id)
        self.tracker.finish(job_id, outcome.succeeded)

    async def submit(self, n: int, steps: int) -> str:
        assert self.client is not None
        job_id = await self.client.submit_job(job(n, steps))
        task = asyncio.create_task(self._wait(job_id))
        self.waits.add(task)
        task.add_done_callback(self.waits.discard)
        return job_id

    async def verify(self, handles: list[str]) -> int:
        return sum(h in self.succeeded for h in handles)

    def process_groups(self) -> dict[str, list[int]]:
        # The driver counts this process (the client) as "producer".
        groups: dict[str, list[int]] = {}
        for p in self.fleet.processes:
            groups.setdefault(p.role, []).append(p.pid)
        return groups

    async def close(self) -> None:
        for task in list(self.waits):
            task.cancel()
        await asyncio.gather(*self.waits, return_exceptions=True)
        await asyncio.to_thread(self.fleet.stop_all)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        await purge_fleet(self.settings)
