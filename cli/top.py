"""``sasfleet top``: a live terminal view of a fleet (rich).

Jobs per state over the most recent jobs, throughput and latency of the jobs that end while
it watches, the live agents and the steps they run, queue depths, and recent failures.
It only reads: Redis (job index, job states, agent records) and the broker (passive queue
declares on a channel of its own); it declares nothing and needs no service's /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import click
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sasfleet.cli.stats import percentile
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.shared.ids import instance_id
from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.connection import redis_for
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.views import AgentView, JobView
from sasfleet.shared.statemachine import JOB_TERMINAL, JobStatus

FAILED = frozenset({"failed", "compensated", "escalated", "cancelled"})
THROUGHPUT_WINDOW_S = 10.0
LATENCY_WINDOW_S = 60.0
DETAILS_PER_REFRESH = 100  # newly ended jobs read in full per refresh (for latency/errors)


@dataclass
class Snapshot:
    """One frame's data."""

    at: float
    prefix: str
    window: int
    states: Counter[str]
    agents: list[AgentView]
    queues: dict[str, tuple[int, int]]
    failures: list[JobView]
    throughput: float | None  # jobs ended per second while watching (None: first frame)
    latency_ms: dict[int, float]  # percentile -> ms, of jobs that ended while watching


@dataclass
class Watcher:
    """Keeps what successive frames need: which jobs were already seen ended, when."""

    reader: JobReader
    agents: AgentRegistry
    fleet: FleetChannel | None
    prefix: str
    default_pool: str
    window: int
    started: float = field(default_factory=time.monotonic)
    _ended: set[str] = field(default_factory=set)
    _first: bool = True
    _ends: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    _latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=5000))
    _failures: deque[JobView] = field(default_factory=lambda: deque(maxlen=8))

    async def snapshot(self) -> Snapshot:
        """Read the fleet's state now and fold it into what earlier frames saw."""
        now, first = time.monotonic(), self._first
        ids = await self.reader.job_ids(self.window)
        statuses = await self.reader.statuses(ids)
        states = Counter(s for s in statuses.values() if s)
        ended = [j for j, s in statuses.items() if s in JOB_TERMINAL and j not in self._ended]
        self._ended.update(ended)
        self._ended &= set(ids)  # forget what slid out of the window
        if first:
            # Jobs that ended before we watched: not throughput, but their failures show.
            failed = [j for j in ended if statuses[j] in FAILED][:8]
            await self._read_failures(list(reversed(failed)))
        else:
            self._ends.extend([now] * len(ended))
            await self._read_ended(ended[:DETAILS_PER_REFRESH], now)
        agents = await self.agents.live()
        return Snapshot(
            at=time.time(),
            prefix=self.prefix,
            window=self.window,
            states=states,
            agents=agents,
            queues=await self._queues(agents),
            failures=list(reversed(self._failures)),
            throughput=None if first else self._throughput(now),
            latency_ms=self._latency(now),
        )

    async def _read_failures(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            view = await self.reader.job(job_id, with_history=False)
            if view is not None:
                self._failures.append(view)
        self._first = False

    async def _read_ended(self, job_ids: list[str], now: float) -> None:
        for job_id in job_ids:
            view = await self.reader.job(job_id, with_history=False)
            if view is None:
                continue
            if view.finished_at is not None:
                self._latencies.append((now, (view.finished_at - view.created_at) / 1000))
            if view.status in FAILED:
                self._failures.append(view)

    def _throughput(self, now: float) -> float:
        span = min(THROUGHPUT_WINDOW_S, now - self.started)
        recent = sum(1 for t in self._ends if now - t <= THROUGHPUT_WINDOW_S)
        return recent / span if span > 0 else 0.0

    def _latency(self, now: float) -> dict[int, float]:
        recent = [s for t, s in self._latencies if now - t <= LATENCY_WINDOW_S]
        return {p: percentile(recent, p) * 1000 for p in (50, 95, 99)} if recent else {}

    async def _queues(self, agents: list[AgentView]) -> dict[str, tuple[int, int]]:
        if self.fleet is None:
            return {}
        n = self.fleet.names
        pools = sorted({self.default_pool, *(a.pool for a in agents)})
        names = [n.submit, n.events, n.dead]
        for pool in pools:
            names += [n.pool(pool), n.pool(pool, "high")]
        try:
            return await self.fleet.monitor.depths(names)
        except Exception:
            return {}


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def render(snap: Snapshot) -> RenderableType:
    """The frame for one snapshot (pure: tests render it to text)."""
    header = Text.assemble(
        ("sasfleet top", "bold"),
        f"  fleet {snap.prefix}  ",
        time.strftime("%H:%M:%S", time.localtime(snap.at)),
        "  throughput ",
        ("-" if snap.throughput is None else f"{snap.throughput:.1f} jobs/s", "bold"),
        "  latency p50/p95/p99 ",
        (
            "/".join(f"{snap.latency_ms[p]:.0f}" for p in (50, 95, 99)) + " ms"
            if snap.latency_ms
            else "-",
            "bold",
        ),
    )
    states = Table(title=f"jobs (newest {snap.window})", title_justify="left")
    states.add_column("state")
    states.add_column("jobs", justify="right")
    for status in JobStatus:
        states.add_row(status.value, str(snap.states.get(status.value, 0)))

    queues = Table(title="queues", title_justify="left")
    for col, justify in (("queue", "left"), ("ready", "right"), ("consumers", "right")):
        queues.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, (messages, consumers) in sorted(snap.queues.items()):
        queues.add_row(name, str(messages), str(consumers))

    agents = Table(title=f"agents ({len(snap.agents)})", title_justify="left")
    for col in ("agent", "pool", "busy", "last beat", "running (job|step)"):
        agents.add_column(col)
    now_ms = snap.at * 1000
    for a in sorted(snap.agents, key=lambda a: (a.pool, a.agent_id)):
        running = ", ".join(a.running[:4]) + (
            f" +{len(a.running) - 4}" if len(a.running) > 4 else ""
        )
        agents.add_row(
            a.agent_id,
            a.pool,
            f"{len(a.running)}/{a.concurrency}",
            _age(max(0.0, now_ms - a.last_beat) / 1000) + " ago",
            running or "-",
        )

    failures = Table(title="recent failures", title_justify="left")
    for col in ("job", "status", "ended", "error"):
        failures.add_column(col)
    for job in snap.failures:
        failures.add_row(job.job_id, job.status, _ended_at(job), _error(job.error))
    return Group(header, Columns([states, queues]), agents, failures)


def _ended_at(job: JobView) -> str:
    if job.finished_at is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(job.finished_at / 1000))


def _error(error: Any) -> str:
    if isinstance(error, dict):
        text = f"{error.get('type', '?')}: {error.get('message', '')}"
    else:
        text = "-" if error is None else str(error)
    return text if len(text) <= 80 else text[:79] + "…"


async def watch(
    settings: Settings, interval: float, window: int, once: bool, console: Console
) -> None:
    """Show frames until interrupted (one with ``once``)."""
    redis = redis_for(settings, max_connections=4)
    fleet = FleetChannel(settings.amqp_url.get_secret_value(), settings.prefix, instance_id("top"))
    try:
        try:
            await fleet.open_monitor()
            monitor: FleetChannel | None = fleet
        except Exception as exc:
            console.print(f"[yellow]no broker connection ({exc}); queue depths not shown[/yellow]")
            monitor = None
        watcher = Watcher(
            JobReader(redis, settings.prefix),
            AgentRegistry(redis, settings.prefix),
            monitor,
            settings.prefix,
            settings.default_pool,
            window,
        )
        if once:
            console.print(render(await watcher.snapshot()))
            return
        with Live(render(await watcher.snapshot()), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await watcher.snapshot()), refresh=True)
    finally:
        await fleet.monitor.close()
        await fleet.close()
        await redis.aclose()


@click.command()
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 60))
@click.option(
    "--window",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many of the newest jobs the per-state counts cover.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@settings_options
def top(interval: float, window: int, once: bool, settings: Settings) -> None:
    """A live view of the fleet: jobs per state, throughput, latency, agents and their
    running steps, queue depths, recent failures. Ctrl-C to leave."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(settings, interval, window, once, Console()))
