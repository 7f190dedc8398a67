"""Each service's small HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

- ``/healthz``: 200 while the process's event loop answers (a wedged loop does not, which
  is what a liveness probe should see).
- ``/readyz``: 200 when Redis answered the last probe, the RabbitMQ connection is open and
  the service consumes (or scans); 503 otherwise, e.g. while an agent drains. The body is
  JSON with each check.
- ``/metrics``: the fleet's registry in the Prometheus text format (OpenMetrics when the
  scraper asks for it).

The server runs on the service's own event loop (asyncio streams, no extra thread or web
framework): requests are tiny and rare. ``SASFLEET_METRICS_PORT`` / ``--metrics-port``
choose the port; 0 (the default) serves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import msgspec
from prometheus_client.exposition import choose_encoder

from sasfleet.shared.telemetry import metrics

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
_json = msgspec.json.Encoder()
_MAX_REQUEST = 16_384
PROBE_TIMEOUT_S = 2.0


class Health:
    """The readiness checks of one service: each a name and whether it passes now."""

    def __init__(self, service: str, instance: str, checks: tuple[str, ...]) -> None:
        self.service = service
        self.instance = instance
        self.started = time.time()
        self._checks: dict[str, bool] = dict.fromkeys(checks, False)

    def set(self, check: str, ok: bool) -> None:
        """Record whether ``check`` passes now (and update the connection gauges)."""
        self._checks[check] = ok
        if check == "redis":
            metrics.REDIS_CONNECTED.set(1 if ok else 0)
        elif check == "amqp":
            metrics.AMQP_CONNECTED.set(1 if ok else 0)
        metrics.READY.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        """Whether every check passes."""
        return all(self._checks.values())

    def report(self) -> dict[str, object]:
        """The JSON body of /healthz and /readyz."""
        return {
            "service": self.service,
            "instance": self.instance,
            "ready": self.ready,
            "checks": dict(self._checks),
            "uptime_s": round(time.time() - self.started, 3),
        }

    async def probe(self, probes: Mapping[str, Probe]) -> None:
        """Run each probe once (with a timeout) and record the answers."""
        for name, check in probes.items():
            try:
                ok = bool(await asyncio.wait_for(check(), PROBE_TIMEOUT_S))
            except Exception:
                ok = False
            self.set(name, ok)

    async def watch(
        self,
        probes: Mapping[str, Probe],
        stop: asyncio.Event,
        interval_s: float,
        extra: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Probe every ``interval_s`` until ``stop``; ``extra`` samples more gauges (queue
        depths...) in the same rhythm. A failing ``extra`` is logged, never fatal."""
        while not stop.is_set():
            await self.probe(probes)
            if extra is not None:
                try:
                    await extra()
                except Exception as exc:
                    log.debug("sampling metrics failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


async def _handle(
    health: Health, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        writer.close()
        return
    try:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in header_lines if line)
        }
        status, content_type, body = _respond(health, method, target.split("?", 1)[0], headers)
    except ValueError:
        status, content_type, body = 400, "text/plain; charset=utf-8", b"bad request\n"
    writer.write(
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode("latin-1")
        + (body if method != "HEAD" else b"")
    )
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _respond(
    health: Health, method: str, path: str, headers: Mapping[str, str]
) -> tuple[int, str, bytes]:
    if method not in ("GET", "HEAD"):
        return 405, "text/plain; charset=utf-8", b"method not allowed\n"
    if path == "/metrics":
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        return 200, content_type, encoder(metrics.REGISTRY)
    if path == "/healthz":
        return 200, "application/json", _json.encode({"alive": True, **health.report()})
    if path == "/readyz":
        return (200 if health.ready else 503), "application/json", _json.encode(health.report())
    return 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n"


@contextlib.asynccontextmanager
async def serving(health: Health, host: str, port: int) -> AsyncIterator[int]:
    """Serve the endpoints on ``host:port`` for the duration of the block; yields the port
    bound (0: nothing served)."""
    if not port:
        yield 0
        return
    server = await asyncio.start_server(
        lambda r, w: _handle(health, r, w), host, port, limit=_MAX_REQUEST
    )
    bound = server.sockets[0].getsockname()[1]
    metrics.set_exported(True)
    log.info("serving /metrics, /healthz and /readyz on %s:%d", host, bound)
    try:
        yield int(bound)
    finally:
        metrics.set_exported(False)
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)


@contextlib.asynccontextmanager
async def observed(
    health: Health,
    host: str,
    port: int,
    stop: asyncio.Event,
    probes: Mapping[str, Probe],
    interval_s: float,
    extra: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Health]:
    """Serve the endpoints and keep the probes and sampled gauges current while the block
    runs. With no port configured this does nothing at all (no server, no probing)."""
    async with serving(health, host, port) as bound:
        watcher = (
            asyncio.create_task(health.watch(probes, stop, interval_s, extra)) if bound else None
        )
        try:
            yield health
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
