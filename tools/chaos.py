"""``sasfleet chaos``: the fleet under faults, every invariant checked on every job.

Starts a private RabbitMQ node and a private Redis (AOF ``appendfsync always``) on free
ports, then two schedulers, two supervisors and N agents as real processes on them, and
runs a workload of one-step and three-step jobs (``chaos_step``/``chaos_undo`` in
``chaos_tasks``, which record every execution) while it injects faults: SIGKILLed
agents, schedulers and supervisors (each replaced), an agent SIGSTOPped past the heartbeat
timeout and then resumed, RabbitMQ and Redis restarts (every second one a SIGKILL), and
garbage published to every queue. Then it checks every job (``chaos_check``) and prints
the table. Exit 0 only when no job is lost and every invariant holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from sasfleet.shared.client import Client
from sasfleet.shared.config import Settings, load_settings
from sasfleet.shared.state.connection import redis_for
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.views import JobView
from sasfleet.shared.statemachine import JOB_TERMINAL
from sasfleet.tools.chaos_check import Records, timings, verify
from sasfleet.tools.chaos_faults import CHAOS_TASKS, Injector
from sasfleet.tools.chaos_report import ChaosConfig, ChaosResult, render
from sasfleet.tools.chaos_services import PrivateRabbit, PrivateRedis
from sasfleet.tools.chaos_workload import FAULT_KINDS, PlannedJob, plan_faults, plan_jobs
from sasfleet.tools.fleet import LocalFleet

# The fleet's timings under chaos: a dead agent's steps are recovered within a second, a
# hung one's after AGENT_TIMEOUT_S; a lease is 3 s.
CHAOS_ENV = {
    "SASFLEET_LEASE_S": "3",
    "SASFLEET_HEARTBEAT_S": "0.5",
    "SASFLEET_AGENT_TIMEOUT_S": "2.5",
    "SASFLEET_SUPERVISOR_TICK_S": "0.2",
    "SASFLEET_RETRY_INITIAL_S": "0.05",
    "SASFLEET_RETRY_MAX_S": "0.5",
    "SASFLEET_DISPATCH_TIMEOUT_S": "30",
    "SASFLEET_ADVANCE_GRACE_S": "2",
}


class Run:
    """One chaos run against a fleet already started on the private services."""

    def __init__(
        self,
        config: ChaosConfig,
        settings: Settings,
        injector: Injector,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.settings = settings
        self.injector = injector
        self.say = say
        self.plan = plan_jobs(settings.prefix, config.jobs, config.seed)
        self.fault_plan = plan_faults(config.faults, config.seed, config.kinds)
        self.accepted: set[str] = set()
        self.finished: set[str] = set()
        self.faults_done = 0
        self.submitted_all = False
        self.drained = asyncio.Event()
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    async def _submit(self, client: Client, job: PlannedJob, ns: str) -> None:
        give_up = time.monotonic() + 180
        while True:
            try:
                await client.submit_job(job.submission(ns))
                self.accepted.add(job.job_id)
                return
            except Exception as exc:  # the broker is restarting: submit again (same id)
                if time.monotonic() > give_up:
                    self.say(f"[red]giving up submitting {job.job_id}: {exc}[/red]")
                    return
                await asyncio.sleep(0.5)

    async def submit_all(self, client: Client) -> None:
        """Jobs at an even pace over the run, never ahead of the fault plan."""
        n, m, span = len(self.plan), len(self.fault_plan), self.config.duration * 0.9
        ns, i = f"{self.settings.prefix}:chaos", 0
        while i < n:
            allowed = min(n * self.elapsed() / span, n * (self.faults_done + 1.5) / (m + 1), n)
            upto = int(allowed)
            if upto > i:
                await asyncio.gather(*(self._submit(client, j, ns) for j in self.plan[i:upto]))
                i = upto
            await asyncio.sleep(0.05)

    async def inject_all(self) -> None:
        m = len(self.fault_plan)
        for k, kind in enumerate(self.fault_plan):
            due = self.config.duration * (k + 1) / (m + 1)
            await asyncio.sleep(max(0.0, due - self.elapsed()))
            fault = await self.injector.inject(kind)
            self.faults_done += 1
            self.say(f"{self.elapsed():6.1f}s fault {k + 1}/{m} {kind}: {fault.detail}")
            await asyncio.sleep(1.0)

    async def poll(self, reader: JobReader, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiting = sorted(self.accepted - self.finished)
            try:
                for start in range(0, len(waiting), 500):
                    statuses = await reader.statuses(waiting[start : start + 500])
                    self.finished |= {j for j, s in statuses.items() if s in JOB_TERMINAL}
            except Exception:  # Redis is restarting
                pass
            if self.submitted_all and not self.accepted - self.finished:
                self.drained.set()
            await asyncio.sleep(0.5)

    async def report_progress(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(10)
            self.say(
                f"{self.elapsed():6.1f}s submitted {len(self.accepted)}/{len(self.plan)}, "
                f"finished {len(self.finished)}, faults {self.faults_done}/{len(self.fault_plan)}"
            )

    async def drain(self) -> int:
        """Wait until every accepted job ended; returns how many did not in time."""
        self.submitted_all = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), self.config.drain_timeout_s)
        return len(self.accepted - self.finished)


async def _read_all(reader: JobReader, job_ids: list[str]) -> dict[str, JobView | None]:
    gate = asyncio.Semaphore(32)

    async def one(job_id: str) -> tuple[str, JobView | None]:
        async with gate:
            return job_id, await reader.job(job_id)

    return dict(await asyncio.gather(*(one(j) for j in job_ids)))


async def _records(settings: Settings) -> Records:
    redis = redis_for(settings)
    ns = f"{settings.prefix}:chaos"
    try:

        async def hash_of(name: str) -> dict[str, str]:
            return {str(k): str(v) for k, v in (await redis.hgetall(f"{ns}:{name}")).items()}

        return Records(
            executions={str(x) for x in await redis.smembers(f"{ns}:executions")},
            effects=await hash_of("effects"),
            undone=await hash_of("undone"),
            refused=await hash_of("refused"),
        )
    finally:
        await redis.aclose()


async def run_chaos(config: ChaosConfig, console: Console, root: Path | None = None) -> ChaosResult:
    """One chaos run; the private services' data and the logs go under ``root`` (a new
    temporary directory by default), removed afterwards unless ``config.keep``."""
    root = root or Path(tempfile.mkdtemp(prefix="sasfleet-chaos-"))
    rabbit, redis = PrivateRabbit(root), PrivateRedis(root)
    fleet: LocalFleet | None = None
    try:
        up_s = await asyncio.to_thread(rabbit.start)
        await asyncio.to_thread(redis.start)
        console.print(
            f"private RabbitMQ {rabbit.nodename} on :{rabbit.port} (up in {up_s:.1f}s), "
            f"private Redis on :{redis.port} (AOF always); data in {root}"
        )
        overrides = {k[len("SASFLEET_") :].lower(): v for k, v in CHAOS_ENV.items()}
        settings = load_settings(
            amqp_url=rabbit.url,
            redis_url=redis.url,
            prefix=f"chaos-{uuid.uuid4().hex[:6]}",
            **overrides,
        )
        fleet = LocalFleet(settings, env=dict(CHAOS_ENV), workdir=root / "logs")
        fleet.workdir.mkdir(parents=True, exist_ok=True)
        return await _run(config, settings, fleet, rabbit, redis, console)
    finally:
        if fleet is not None:
            await asyncio.to_thread(fleet.stop_all, 15.0)
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(rabbit.stop)
        if config.keep:
            console.print(f"kept the run's data and logs in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


async def _run(
    config: ChaosConfig,
    settings: Settings,
    fleet: LocalFleet,
    rabbit: PrivateRabbit,
    redis: PrivateRedis,
    console: Console,
) -> ChaosResult:
    started = [fleet.start(role, wait=False) for role in ("scheduler",) * 2 + ("supervisor",) * 2]
    started += [
        fleet.agent(CHAOS_TASKS, concurrency=config.concurrency, wait=False)
        for _ in range(config.agents)
    ]
    for service in started:
        await asyncio.to_thread(fleet.wait_ready, service, 60.0)
    console.print(
        f"fleet {settings.prefix}: 2 schedulers, 2 supervisors, {config.agents} agents x "
        f"{config.concurrency} (pids {', '.join(str(p.pid) for p in started)}); logs in "
        f"{fleet.workdir}"
    )
    injector = Injector(
        fleet,
        rabbit,
        redis,
        settings,
        random.Random(config.seed),
        config.concurrency,
        stop_for_s=settings.agent_timeout_s + 1.5,
    )
    run = Run(config, settings, injector, console.print)
    console.print(
        f"{config.jobs} jobs and {config.faults} faults over ~{config.duration:.0f}s: "
        f"{', '.join(run.fault_plan)}"
    )
    stop = asyncio.Event()
    reader_redis = redis_for(settings)
    reader = JobReader(reader_redis, settings.prefix)
    client = Client(settings)
    await client.connect()
    await injector.open()
    background = [
        asyncio.create_task(injector.watch(stop)),
        asyncio.create_task(run.poll(reader, stop)),
        asyncio.create_task(run.report_progress(stop)),
    ]
    try:
        await asyncio.gather(run.submit_all(client), run.inject_all())
        unfinished = await run.drain()
        await injector.settle()
        views = await _read_all(reader, [j.job_id for j in run.plan if j.job_id in run.accepted])
        verdict = verify(
            [j for j in run.plan if j.job_id in run.accepted], views, await _records(settings)
        )
        garbage_problems = await _check_garbage(injector)
        service_problems = list(injector.unexpected_exits) + [
            f"{p.name} (pid {p.pid}) is not running"
            for p in fleet.processes
            if not p.alive() and p.pid not in injector.killed
        ]
        return ChaosResult(
            config=config,
            prefix=settings.prefix,
            plan=run.plan,
            accepted=run.accepted,
            faults=injector.faults,
            verdict=verdict,
            timings=timings(injector.faults, views.values()),
            garbage_problems=garbage_problems,
            service_problems=service_problems,
            unfinished=unfinished,
            elapsed_s=run.elapsed(),
        )
    finally:
        stop.set()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await injector.close()
        await client.close()
        await reader_redis.aclose()


async def _check_garbage(injector: Injector) -> list[str]:
    """Every bad message is in the dead-letter queue with a reason header."""
    found = await injector.dead_letter_reasons()
    problems = []
    for fault in injector.faults:
        for message_id, queue in fault.garbage.items():
            if message_id not in found:
                problems.append(f"{message_id} (to {queue}) was not dead-lettered")
            elif not found[message_id][1]:
                problems.append(f"{message_id} (to {queue}) was dead-lettered without a reason")
    return problems


@click.command()
@click.option("--jobs", "-n", default=2000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--faults", "-f", default=22, show_default=True, type=click.IntRange(0, 1000))
@click.option(
    "--duration",
    type=click.FloatRange(1),
    help="Seconds over which jobs and faults are spread [default: 6 s a fault].",
)
@click.option("--agents", default=4, show_default=True, type=click.IntRange(2, 64))
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--only",
    "kinds",
    multiple=True,
    type=click.Choice(FAULT_KINDS),
    help="Inject only faults of this kind (repeat for several) [default: every kind].",
)
@click.option("--keep", is_flag=True, help="Keep the private services' data and the logs.")
def chaos(
    jobs: int,
    faults: int,
    duration: float | None,
    agents: int,
    concurrency: int,
    seed: int,
    kinds: tuple[str, ...],
    keep: bool,
) -> None:
    """Run jobs through the fleet while killing, freezing and restarting its processes,
    RabbitMQ and Redis (private ones) and feeding it garbage; check every job. Exit 0 only
    when no job is lost and every invariant holds."""
    console = Console()
    config = ChaosConfig(
        jobs=jobs,
        faults=faults,
        duration_s=duration,
        agents=agents,
        concurrency=concurrency,
        seed=seed,
        kinds=kinds or FAULT_KINDS,
        keep=keep,
    )
    console.print(
        f"sasfleet chaos --jobs {jobs} --faults {faults} --agents {agents} "
        f"--concurrency {concurrency} --seed {seed}"
    )
    root = Path(tempfile.mkdtemp(prefix="sasfleet-chaos-"))
    # This process's own warnings (publishes retried while the broker restarts) go to a file.
    logging.basicConfig(
        level=logging.WARNING,
        filename=root / "runner.log",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    result = asyncio.run(run_chaos(config, console, root))
    render(result, console)
    sys.exit(0 if result.ok else 1)
