"""Agent wiring and lifecycle: connect, consume the pool's queue, heartbeat, drain."""

from __future__ import annotations

import asyncio
import logging

from sasfleet.agent.heartbeat import Heartbeat
from sasfleet.agent.registry import Registry
from sasfleet.agent.runner import Runner
from sasfleet.shared.config import Settings
from sasfleet.shared.connections import Connections, connected
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import every, mark_ready
from sasfleet.shared.state.agents import agent_connection_prefix

log = logging.getLogger(__name__)


class AgentService:
    """Runs the handlers of ``registry`` for the steps of one pool."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        pool: str,
        concurrency: int,
        grace_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.instance = instance_id(f"agent-{pool}")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        async with connected(
            s,
            "agent",
            self.instance,
            stop,
            prefetch=self.concurrency,
            checks=("consuming",),
            # Named connections let supervisors see at once when this process is gone.
            redis_name=agent_connection_prefix(s.prefix) + self.instance,
            amqp_heartbeat_s=s.amqp_heartbeat_s,
        ) as c:
            await self._serve(stop, ready_file, c)

    async def _serve(self, stop: asyncio.Event, ready_file: str | None, c: Connections) -> None:
        s, store, fleet, health = self.settings, c.store, c.fleet, c.health
        agents = store.agents
        runner = Runner(s, self.registry, store, fleet, self.instance, self.concurrency)
        heartbeat = Heartbeat(
            runner, agents, self.pool, self.concurrency, min(s.heartbeat_s, s.lease_s / 3)
        )
        beating = asyncio.create_task(every(heartbeat.interval_s, stop, heartbeat.beat))
        try:
            await heartbeat.beat()
            consumers = [
                await c.consumer(fleet.names.pool(self.pool, "high"), runner.handle_high),
                await c.consumer(fleet.names.pool(self.pool), runner.handle),
            ]
            log.info(
                "agent %s consuming %s with %d slots (tasks: %s)",
                self.instance,
                fleet.names.pool(self.pool),
                self.concurrency,
                ", ".join(sorted(self.registry.tasks)),
            )
            health.set("consuming", True)
            mark_ready(ready_file)
            await stop.wait()
            health.set("consuming", False)  # draining: not ready for new work
            log.info("agent %s draining %d running steps", self.instance, len(runner.running))
            for consumer in consumers:
                await consumer.stop(grace_s=0)
            running = [r.task for r in runner.running.values() if r.task is not None]
            if running:
                await asyncio.wait(running, timeout=self.grace_s)
            if runner.running:
                released = await runner.release_all()
                log.info("agent %s handed %d unfinished steps back", self.instance, released)
        finally:
            beating.cancel()
            await agents.leave(self.instance)
            runner.executor.shutdown(wait=False, cancel_futures=True)
