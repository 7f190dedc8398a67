"""Robust connections: aio-pika reconnects and restores channels, exchanges and consumers."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractRobustConnection


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """Connect to RabbitMQ; the connection name shows in the management UI."""
    return await aio_pika.connect_robust(
        url, client_properties={"connection_name": name}, reconnect_interval=1.0
    )
