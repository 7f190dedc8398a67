"""Periodic schedules in Redis: the definitions, and a sorted set of next ticks."""

from __future__ import annotations

import msgspec

from sasfleet.shared.messages.codec import encode
from sasfleet.shared.messages.schedule import Schedule
from sasfleet.shared.state.store import StateStore

_decoder = msgspec.json.Decoder(Schedule)


class Schedules:
    """Adds, lists and removes schedules; hands out due ticks to exactly one scheduler."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    async def add(self, schedule: Schedule, first_tick_ms: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.schedules, schedule.name, encode(schedule))
            pipe.zadd(self.keys.cron, {schedule.name: first_tick_ms})
            await pipe.execute()

    async def remove(self, name: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.schedules, name)
            pipe.zrem(self.keys.cron, name)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def all(self) -> list[tuple[Schedule, int | None]]:
        """Every schedule with its next tick (ms)."""
        raw = await self.redis.hgetall(self.keys.schedules)
        out = []
        for name, body in sorted(raw.items()):
            tick = await self.redis.zscore(self.keys.cron, name)
            out.append((_decoder.decode(body), int(tick) if tick is not None else None))
        return out

    async def due(self, now_ms: int, limit: int) -> list[tuple[Schedule, int]]:
        """Schedules whose tick has come, with that tick."""
        entries = await self.redis.zrangebyscore(
            self.keys.cron, "-inf", now_ms, start=0, num=limit, withscores=True
        )
        out = []
        for name, tick in entries:  # type: ignore[str-unpack]
            body = await self.redis.hget(self.keys.schedules, name)
            if body is not None:
                out.append((_decoder.decode(body), int(tick)))
        return out

    async def advance(self, name: str, tick_ms: int, next_tick_ms: int) -> bool:
        """Move ``name`` from ``tick_ms`` to its next tick; False if another scheduler did."""
        # Claimed while due at `tick_ms`: the first scheduler to move it owns the tick.
        return await self.store.claim_due(self.keys.cron, name, next_tick_ms, now_ms=tick_ms)
