"""Robust connections: aio-pika reconnects and restores channels, exchanges and consumers."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractRobustConnection


async def connect(url: str, name: str, heartbeat_s: int = 10) -> AbstractRobustConnection:
    """Connect to RabbitMQ; the connection name shows in the management UI.

    ``heartbeat_s`` is the AMQP heartbeat: a frozen process (SIGSTOP, a stalled VM) is
    disconnected by the broker after about two of them, which returns its unacked
    deliveries to the queue for healthy consumers.
    """
    return await aio_pika.connect_robust(
        url,
        client_properties={"connection_name": name},
        reconnect_interval=1.0,
        heartbeat=heartbeat_s,
    )
