"""Agent liveness: an agent whose process is gone (its Redis connections closed) or whose
heartbeats stopped (hung, frozen, cut off) has its running steps recovered at once,
instead of when their leases run out."""

from __future__ import annotations

import logging
from collections import Counter

from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.state.views import AgentView
from sasfleet.shared.telemetry import metrics

log = logging.getLogger(__name__)

# An agent must be missing from Redis' client list in this many consecutive scans before
# it counts as gone: a reconnect drops a connection for a moment.
MISSING_SCANS = 2


class Liveness:
    """Finds dead and hung agents and makes their steps' deadlines due now."""

    def __init__(self, agents: AgentRegistry, store: StateStore, timeout_ms: int) -> None:
        self.agents = agents
        self.store = store
        self.timeout_ms = timeout_ms
        self._missing: dict[str, int] = {}
        self.detected = 0

    async def tick(self) -> bool:
        now = self.store.clock.now_ms()
        records = await self.agents.live()
        # Just after a Redis restart no agent is connected yet: they reconnect with their
        # next command (a heartbeat at the latest). Until then only heartbeats decide.
        if await self.agents.redis_uptime_s() * 1000 < self.timeout_ms:
            connected = {a.agent_id for a in records}
        else:
            connected = await self.agents.connected()
        lost: set[str] = set()
        for agent in records:
            verdict = self._verdict(agent, connected, now)
            if verdict is None:
                continue
            why, reason = verdict
            expired = await self.store.expire_agent(agent.agent_id)
            await self.agents.leave(agent.agent_id)
            self._missing.pop(agent.agent_id, None)
            self.detected += 1
            lost.add(agent.agent_id)
            metrics.AGENTS_LOST.labels(why).inc()
            log.warning(
                "agent %s (pid %d on %s) %s; recovering its %d running steps now",
                agent.agent_id,
                agent.pid,
                agent.host,
                reason,
                expired,
            )
        live = {a.agent_id for a in records}
        self._missing = {k: v for k, v in self._missing.items() if k in live}
        self._count_live([a for a in records if a.agent_id not in lost])
        return False

    @staticmethod
    def _count_live(agents: list[AgentView]) -> None:
        per_pool = Counter(a.pool for a in agents)
        metrics.LIVE_AGENTS.clear()  # pools with no agent left drop out
        for pool, count in per_pool.items():
            metrics.LIVE_AGENTS.labels(pool).set(count)

    def _verdict(self, agent: AgentView, connected: set[str], now: int) -> tuple[str, str] | None:
        """None while the agent is well; else (``hung`` or ``dead``, why in words)."""
        if now - agent.last_beat > self.timeout_ms:
            return "hung", f"sent no heartbeat for {(now - agent.last_beat) / 1000:.1f}s"
        if agent.agent_id in connected:
            self._missing.pop(agent.agent_id, None)
            return None
        self._missing[agent.agent_id] = self._missing.get(agent.agent_id, 0) + 1
        if self._missing[agent.agent_id] >= MISSING_SCANS:
            return "dead", "has no connection to Redis any more (process gone)"
        return None
