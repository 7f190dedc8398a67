"""Agent liveness records: a heartbeat per agent, read by the CLI and the supervisor."""

from __future__ import annotations

from typing import Any, cast

import msgspec
from redis.asyncio.cluster import RedisCluster

from sasfleet.shared.messages.codec import encode
from sasfleet.shared.state.connection import RedisClient
from sasfleet.shared.state.keys import Keys
from sasfleet.shared.state.views import AgentView

_agent_decoder = msgspec.json.Decoder(AgentView)


class AgentRegistry:
    """Writes and reads agent heartbeat records."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)

    async def beat(self, agent: AgentView, ttl_s: int) -> None:
        """Publish the agent's record and last beat (one round trip)."""
        key = self.keys.agent(agent.agent_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, encode(agent), ex=ttl_s)
            pipe.zadd(self.keys.agents, {agent.agent_id: agent.last_beat})
            await pipe.execute()

    async def leave(self, agent_id: str) -> None:
        """Remove an agent that stopped cleanly."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.agent(agent_id))
            pipe.zrem(self.keys.agents, agent_id)
            await pipe.execute()

    async def connected(self) -> set[str]:
        """Agent ids with an open Redis connection (agents name their connections), so an
        agent whose process died is noticed as soon as its TCP connection closes."""
        names = {str(c.get("name", "")) for c in await _client_list(self.redis)}
        prefix = agent_connection_prefix(self.keys.prefix)
        return {n[len(prefix) :] for n in names if n.startswith(prefix)}

    async def redis_uptime_s(self) -> float:
        """Seconds since the (most recently started) Redis server started."""
        if isinstance(self.redis, RedisCluster):
            per_node = cast(
                dict[str, dict[str, Any]],
                await self.redis.info("server", target_nodes=RedisCluster.ALL_NODES),
            )
            return min(float(info["uptime_in_seconds"]) for info in per_node.values())
        return float((await self.redis.info("server"))["uptime_in_seconds"])

    async def live(self) -> list[AgentView]:
        """Agents whose record has not expired, most recent beat first.

        Ids whose record expired (the agent died) are pruned from the index on the way.
        """
        ids = [str(i) for i in await self.redis.zrevrange(self.keys.agents, 0, -1)]
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.agent(i) for i in ids])
        views, dead = [], []
        for agent_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                dead.append(agent_id)
            else:
                views.append(_agent_decoder.decode(raw))
        if dead:
            await self.redis.zrem(self.keys.agents, *dead)
        return views


def agent_connection_prefix(prefix: str) -> str:
    """The Redis client name prefix of this fleet's agents' connections."""
    return f"{prefix}:agent:"


async def _client_list(redis: RedisClient) -> list[dict[str, str]]:
    """CLIENT LIST of every node: in a cluster an agent's connections are spread over the
    nodes that hold its steps' buckets."""
    if isinstance(redis, RedisCluster):
        # With several target nodes the reply is {node name: that node's list}.
        per_node = cast(
            dict[str, list[dict[str, str]]],
            await redis.client_list(target_nodes=RedisCluster.ALL_NODES),
        )
        return [c for clients in per_node.values() for c in clients]
    return list(await redis.client_list())
