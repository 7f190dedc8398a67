"""A service's /metrics, /healthz and /readyz endpoints, served on a local port and
requested over HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest

from sasfleet.shared.telemetry import metrics
from sasfleet.shared.telemetry.health import Health, serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def request(port: int, method: str, path: str, accept: str = "") -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Accept: {accept}\r\n" if accept else ""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    content_type = next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("content-type:")
    )
    return status, content_type, body


@pytest.fixture
def exported() -> Iterator[None]:
    yield
    metrics.set_exported(False)


async def test_health_and_metrics_endpoints(exported: None) -> None:
    health = Health("scheduler", "scheduler-1", ("redis", "amqp", "consuming"))
    port = free_port()
    async with serving(health, "127.0.0.1", port) as bound:
        assert bound == port and metrics.exported()
        status, content_type, body = await request(port, "GET", "/healthz")
        assert (status, content_type, json.loads(body)["alive"]) == (200, "application/json", True)

        status, _, body = await request(port, "GET", "/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {"redis": False, "amqp": False, "consuming": False}

        async def up() -> bool:
            return True

        async def down() -> bool:
            raise ConnectionError("no")

        await health.probe({"redis": up, "amqp": down})
        health.set("consuming", True)
        assert (await request(port, "GET", "/readyz"))[0] == 503
        await health.probe({"amqp": up})
        status, _, body = await request(port, "GET", "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True

        metrics.JOBS_SUBMITTED.inc(0)
        status, content_type, body = await request(port, "GET", "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert "# TYPE sasfleet_jobs_submitted_total counter" in body
        assert "sasfleet_redis_connected 1.0" in body and "sasfleet_ready 1.0" in body
        assert "process_cpu_seconds_total" in body
        _, content_type, body = await request(
            port, "GET", "/metrics", accept="application/openmetrics-text; version=1.0.0"
        )
        assert content_type.startswith("application/openmetrics-text")
        assert body.rstrip().endswith("# EOF")

        assert (await request(port, "GET", "/nope"))[0] == 404
        assert (await request(port, "POST", "/metrics"))[0] == 405
        assert (await request(port, "HEAD", "/healthz"))[2] == ""


async def test_no_port_serves_nothing() -> None:
    async with serving(Health("agent", "a", ()), "127.0.0.1", 0) as bound:
        assert bound == 0 and not metrics.exported()
