"""The chaos suite's private RabbitMQ node and Redis: their own ports and data, durable
across a crash, and stopping them leaves the machine's shared services alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import redis.asyncio as aioredis

from sasfleet.shared.config import load_settings
from sasfleet.tools.chaos_services import PrivateRabbit, PrivateRedis, port_open


async def kept_message(url: str, timeout: float = 60.0) -> bytes | None:
    """The first message of the quorum queue (its leader is elected again after a crash,
    which may take a few seconds: commands wait for it, so ask again until it answers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            connection = await aio_pika.connect(url, timeout=10)
            try:
                channel = await connection.channel()
                queue = await channel.declare_queue("chaos-durable", passive=True)
                message = await asyncio.wait_for(queue.get(no_ack=True, fail=False), 10)
                return None if message is None else message.body
            finally:
                await connection.close()
        except (TimeoutError, aio_pika.exceptions.AMQPError):
            if asyncio.get_running_loop().time() > deadline:
                raise


async def test_private_broker_and_redis_keep_acknowledged_data_across_restarts(
    tmp_path: Path, broker_and_redis_up: None
) -> None:
    shared = load_settings()
    rabbit, redis = PrivateRabbit(tmp_path), PrivateRedis(tmp_path)
    try:
        await asyncio.to_thread(rabbit.start)
        await asyncio.to_thread(redis.start)
        assert rabbit.beam_pid is not None
        assert f":{rabbit.port}/" not in shared.amqp_url.get_secret_value()
        assert f":{redis.port}/" not in shared.redis_url.get_secret_value()

        connection = await aio_pika.connect(rabbit.url)
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "chaos-durable", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )
        await connection.close()
        client = aioredis.Redis.from_url(redis.url)
        await client.set("chaos:kept", "yes")
        await client.aclose()

        # Redis crashes: only its AOF (fsync always) remains. RabbitMQ stops cleanly and
        # starts on the same data directory. (`make chaos` also crashes the broker; here a
        # crash seconds after the queue's creation would hit RabbitMQ 3.10 not electing
        # that new single-node quorum queue's leader again after a restart.)
        await asyncio.to_thread(rabbit.restart)
        await asyncio.to_thread(redis.restart, kill=True)

        assert await kept_message(rabbit.url) == b"kept"
        client = aioredis.Redis.from_url(redis.url)
        assert await client.get("chaos:kept") == b"yes"
        await client.aclose()
    finally:
        await asyncio.to_thread(rabbit.stop)
        await asyncio.to_thread(redis.stop)
    assert not rabbit.alive() and not redis.alive()
    assert not port_open(rabbit.port) and not port_open(redis.port)
    # The machine's shared services never noticed.
    connection = await aio_pika.connect(shared.amqp_url.get_secret_value())
    await connection.close()
    client = aioredis.Redis.from_url(shared.redis_url.get_secret_value())
    assert await client.ping()
    await client.aclose()
