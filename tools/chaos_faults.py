"""The chaos suite's faults: kill, freeze and restart what the fleet runs on.

Every fault is recorded with wall-clock times in ms (the clock of the job histories), so
the time from a fault to the fleet's recovery can be read from the histories afterwards.
Only processes this run started are signalled, each by its own PID.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sasfleet.shared.amqp.deadletters import DeadLetterQueue
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.amqp.topology import REASON_HEADER, Names
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.codec import (
    DECODE_ERRORS,
    dispatch_decoder,
    event_decoder,
    submit_decoder,
)
from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.connection import connect_redis
from sasfleet.tools.chaos_services import PrivateRabbit, PrivateRedis
from sasfleet.tools.fleet import LocalFleet, ServiceProcess

CHAOS_TASKS = "sasfleet.tools.chaos_tasks"  # the task module of the chaos agents


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Fault:
    """One injected fault. Times are wall-clock ms."""

    kind: str
    started_ms: int
    ended_ms: int = 0  # the fault is over: process replaced, service back up, garbage sent
    pid: int | None = None  # the victim process, if any
    detail: str = ""
    garbage: dict[str, str] = field(default_factory=dict)  # message id -> queue
    dead_lettered_ms: int | None = None  # garbage: when the last one reached the dead queue


# --------------------------------------------------------------------------- bad messages


def dead_letters_it(queue_kind: str, body: bytes) -> bool:
    """Whether the service consuming a ``queue_kind`` queue ("submit", "events", "pool")
    must dead-letter ``body`` (it does not decode to a valid message of that queue)."""
    try:
        if queue_kind == "submit":
            submit_decoder.decode(body).step_specs()
        elif queue_kind == "events":
            event = event_decoder.decode(body)
            return event.step < 0 or event.attempt < 0
        else:
            dispatch_decoder.decode(body)
    except (*DECODE_ERRORS, ValueError):
        return True
    return False


_SHAPED: dict[str, list[dict[str, Any]]] = {
    "submit": [
        {"task": 42},
        {"task": "chaos_step", "max_attempts": 0},
        {"steps": []},
        {"task": "chaos_step", "payload": {}, "colour": "red"},
        {"task": "chaos_step", "steps": [{"task": "chaos_step"}]},
        {"kind": "submit", "v": 99, "task": "echo"},
        {"task": "chaos step"},
        {"task": "echo", "delay_s": 1, "start_at": "2030-01-01T00:00:00Z"},
    ],
    "events": [
        {"kind": "step_recorded", "job_id": 5, "step": 0, "attempt": 1, "lease": 1, "by": "x"},
        {"kind": "step_recorded", "job_id": "j", "step": -1, "attempt": 1, "lease": 1, "by": "x"},
        {"kind": "step_recorded", "job_id": "j", "step": 0},
        {"kind": "dispatch", "job_id": "j", "step": 0, "attempt": 1, "lease": 1, "by": "x"},
        {"job_id": "j", "step": "zero", "attempt": 1, "lease": 1, "by": "x"},
    ],
    "pool": [
        {"kind": "dispatch", "job_id": "j", "step": "zero", "task": "echo", "attempt": 1},
        {
            "kind": "dispatch",
            "job_id": "j",
            "step": 0,
            "task": "echo",
            "attempt": 1,
            "lease": "one",
            "idempotency_key": "j:0",
            "timeout_s": 1,
            "payload": {},
        },
        {"kind": "step_recorded", "job_id": "j", "step": 0, "attempt": 1, "lease": 1, "by": "x"},
        {"kind": "dispatch", "job_id": None, "step": 0, "payload": []},
    ],
}


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.3:
        return rng.choice([None, True, 0, -1, 3.5, "", "x" * rng.randint(1, 20), 2**70])
    if roll < 0.6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(["job_id", "step", "kind", "task", "k", "lease", "x"]): _random_json(
            rng, depth + 1
        )
        for _ in range(rng.randint(0, 4))
    }


def garbage_bodies(rng: random.Random, queue_kind: str) -> list[bytes]:
    """Five bad messages for a queue: random bytes, random JSON, a truncated message, and
    two schema-shaped ones with a wrong field. Each is checked to be one the service must
    dead-letter."""
    shaped = _SHAPED[queue_kind]
    candidates = [
        rng.randbytes(rng.randint(1, 300)),
        msgspec.json.encode(_random_json(rng)),
        msgspec.json.encode(rng.choice(shaped))[: rng.randint(2, 20)],
        msgspec.json.encode(rng.choice(shaped)),
        msgspec.json.encode(rng.choice(shaped)),
    ]
    return [b if dead_letters_it(queue_kind, b) else b"\x00not json" for b in candidates]


# --------------------------------------------------------------------------- the injector


@dataclass
class Injector:
    """Injects faults into one fleet and its private broker and Redis, one at a time."""

    fleet: LocalFleet
    rabbit: PrivateRabbit
    redis: PrivateRedis
    settings: Settings
    rng: random.Random
    agent_concurrency: int
    stop_for_s: float  # how long a SIGSTOPped agent stays frozen
    faults: list[Fault] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # PIDs we ended on purpose
    frozen: set[int] = field(default_factory=set)
    unexpected_exits: list[str] = field(default_factory=list)
    _channel: FleetChannel | None = None
    _redis: Any = None
    _agents: AgentRegistry = field(init=False)
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def open(self) -> None:
        self._channel = FleetChannel(self.rabbit.url, self.settings.prefix, "chaos-garbage")
        await self._channel.open(prefetch=1)
        self._redis = connect_redis(self.redis.url)
        self._agents = AgentRegistry(self._redis, self.settings.prefix)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._channel is not None:
            await self._channel.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def settle(self) -> None:
        """Wait for the background checks (garbage reaching the dead-letter queue)."""
        await asyncio.gather(*self._background, return_exceptions=True)

    def alive(self, role: str) -> list[ServiceProcess]:
        return [p for p in self.fleet.processes if p.role == role and p.alive()]

    async def start(self, role: str) -> ServiceProcess:
        """Start one more service process and wait until it consumes."""
        async with self._starting:
            if role == "agent":
                return await asyncio.to_thread(
                    self.fleet.agent, CHAOS_TASKS, concurrency=self.agent_concurrency
                )
            return await asyncio.to_thread(self.fleet.start, role)

    async def inject(self, kind: str) -> Fault:
        fault = Fault(kind, now_ms())
        self.faults.append(fault)
        if kind in ("agent-kill", "scheduler-kill", "supervisor-kill"):
            await self._kill(fault, kind.split("-")[0])
        elif kind == "agent-stop":
            await self._freeze(fault)
        elif kind == "rabbitmq-restart":
            await self._restart(fault, self.rabbit, "RabbitMQ")
        elif kind == "redis-restart":
            await self._restart(fault, self.redis, "Redis")
        elif kind == "garbage":
            await self._garbage(fault)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        fault.ended_ms = fault.ended_ms or now_ms()
        return fault

    async def _victim(self, role: str) -> ServiceProcess:
        """A random process of ``role``; for agents, one of those running the most steps
        right now, waiting (up to 5 s) for one to run any (a fault that hits an idle agent
        proves little)."""
        victims = [p for p in self.alive(role) if p.pid not in self.frozen]
        deadline = time.monotonic() + 5.0
        while role == "agent":
            try:
                running = {a.pid: len(a.running) for a in await self._agents.live()}
            except Exception:  # Redis is restarting
                running = {}
            most = max((running.get(p.pid, 0) for p in victims), default=0)
            if most or time.monotonic() > deadline:
                victims = [p for p in victims if running.get(p.pid, 0) == most]
                break
            await asyncio.sleep(0.1)  # every agent is idle this instant: wait for work
        return self.rng.choice(victims)

    async def _kill(self, fault: Fault, role: str) -> None:
        victim = await self._victim(role)
        self.killed.add(victim.pid)
        fault.started_ms = now_ms()
        victim.kill()
        fault.pid = victim.pid
        replacement = await self.start(role)
        fault.detail = f"SIGKILL {victim.name} (pid {victim.pid}); {replacement.name} started"

    async def _freeze(self, fault: Fault) -> None:
        victim = await self._victim("agent")
        self.frozen.add(victim.pid)
        fault.started_ms = now_ms()
        victim.signal(signal.SIGSTOP)
        fault.pid = victim.pid
        try:
            await asyncio.sleep(self.stop_for_s)
        finally:
            victim.signal(signal.SIGCONT)
            self.frozen.discard(victim.pid)
        fault.detail = f"SIGSTOP {victim.name} (pid {victim.pid}) for {self.stop_for_s:.1f}s"

    async def _restart(self, fault: Fault, server: PrivateRabbit | PrivateRedis, what: str) -> None:
        # Every second restart is a crash (SIGKILL): durability must not depend on a
        # clean shutdown.
        crash = sum(f.kind == fault.kind for f in self.faults) % 2 == 0
        fault.started_ms = now_ms()
        down_s, up_s = await asyncio.to_thread(server.restart, kill=crash)
        fault.ended_ms = now_ms()
        how = "SIGKILL" if crash else "SIGTERM"
        fault.detail = f"{what} {how}, down {down_s:.1f}s, back in {up_s:.1f}s"

    async def _garbage(self, fault: Fault) -> None:
        assert self._channel is not None, "open() first"
        names = Names(self.settings.prefix)
        pool = self.settings.default_pool
        queues = {
            names.submit: "submit",
            names.events: "events",
            names.pool(pool): "pool",
            names.pool(pool, "high"): "pool",
        }
        publisher = self._channel.publisher
        assert publisher is not None
        n = sum(f.kind == "garbage" for f in self.faults)
        fault.started_ms = now_ms()
        for queue, queue_kind in queues.items():
            await self._channel.queue(queue)
            for i, body in enumerate(garbage_bodies(self.rng, queue_kind)):
                message_id = f"garbage-{n}-{queue_kind}-{len(fault.garbage)}-{i}"
                await publisher.publish(body, queue, message_id=message_id)
                fault.garbage[message_id] = queue
        fault.detail = f"{len(fault.garbage)} bad messages to {len(queues)} queues"
        task = asyncio.create_task(self._await_dead_letters(fault))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _await_dead_letters(self, fault: Fault, timeout_s: float = 120.0) -> None:
        dlq = DeadLetterQueue(self.rabbit.url, self.settings.prefix)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                seen = {d.message_id for d in await dlq.peek(10_000)}
            except Exception:  # the broker may be restarting: look again
                seen = set()
            if set(fault.garbage) <= seen:
                fault.dead_lettered_ms = now_ms()
                return
            await asyncio.sleep(0.2)

    async def dead_letter_reasons(self) -> dict[str, tuple[str, bool]]:
        """Every dead letter's message id -> (queue it came from, reason header present)."""
        dlq = DeadLetterQueue(self.rabbit.url, self.settings.prefix)
        return {
            d.message_id or d.id: (d.queue, bool(d.headers.get(REASON_HEADER)))
            for d in await dlq.peek(10_000)
        }

    async def watch(self, stop: asyncio.Event) -> None:
        """Restart any service process that exits without being killed by us (and note it:
        a service must survive every fault)."""
        handled: set[int] = set()
        while not stop.is_set():
            for p in list(self.fleet.processes):
                if p.alive() or p.pid in self.killed or p.pid in handled:
                    continue
                handled.add(p.pid)
                self.unexpected_exits.append(
                    f"{p.name} (pid {p.pid}) exited with {p.proc.returncode}: {p.log()[-1500:]}"
                )
                await self.start(p.role)
            await asyncio.sleep(0.5)
