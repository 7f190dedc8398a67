"""Agent liveness: an agent whose process is gone (its Redis connections closed) or whose
heartbeats stopped (hung, frozen, cut off) has its running steps recovered at once,
instead of when their leases run out."""

from __future__ import annotations

import logging

from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.state.views import AgentView

log = logging.getLogger(__name__)

# An agent must be missing from Redis' client list in this many consecutive scans before
# it counts as gone: a Redis restart or a reconnect drops every connection for a moment.
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
        connected = await self.agents.connected()
        for agent in records:
            reason = self._verdict(agent, connected, now)
            if reason is None:
                continue
            expired = await self.store.expire_agent(agent.agent_id)
            await self.agents.leave(agent.agent_id)
            self._missing.pop(agent.agent_id, None)
            self.detected += 1
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
        return False

    def _verdict(self, agent: AgentView, connected: set[str], now: int) -> str | None:
        if now - agent.last_beat > self.timeout_ms:
            return f"sent no heartbeat for {(now - agent.last_beat) / 1000:.1f}s"
        if agent.agent_id in connected:
            self._missing.pop(agent.agent_id, None)
            return None
        self._missing[agent.agent_id] = self._missing.get(agent.agent_id, 0) + 1
        if self._missing[agent.agent_id] >= MISSING_SCANS:
            return "has no connection to Redis any more (process gone)"
        return None
