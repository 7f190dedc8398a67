"""Removes every Redis key and broker queue of one prefix (tests, demo, benchmark)."""

from __future__ import annotations

from sasfleet.shared.amqp.connection import connect
from sasfleet.shared.amqp.topology import Names
from sasfleet.shared.config import Settings
from sasfleet.shared.state.connection import redis_for
from sasfleet.shared.state.keys import Keys


async def purge_fleet(
    settings: Settings, pools: list[str] | tuple[str, ...] = ("default",)
) -> None:
    """Delete the prefix's Redis keys, queues and exchanges. Only this prefix's."""
    redis = redis_for(settings)
    try:
        batch: list[str] = []
        async for key in redis.scan_iter(match=Keys(settings.prefix).pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.unlink(*batch)
                batch.clear()
        if batch:
            await redis.unlink(*batch)
    finally:
        await redis.aclose()
    names = Names(settings.prefix)
    connection = await connect(settings.amqp_url.get_secret_value(), "sasfleet-purge")
    try:
        channel = await connection.channel()
        for queue in (
            names.submit,
            names.events,
            names.dead,
            *(names.pool(p) for p in pools),
            *(names.pool(p, "high") for p in pools),
        ):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.dead_exchange):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
