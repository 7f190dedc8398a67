"""Flags every command shares, and the process main of every service."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import click
from pydantic import ValidationError

from sasfleet.shared.config import Settings, load_settings
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import run, stop_on_signals, stop_with_parent
from sasfleet.shared.telemetry.logs import setup_logging
from sasfleet.shared.telemetry.tracing import setup_tracing, shutdown_tracing

F = Callable[..., Any]


def _with_settings(fn: F, *, cli_tracing: bool) -> F:
    @click.option("--amqp-url", envvar=None, help="RabbitMQ URL [env SASFLEET_AMQP_URL].")
    @click.option("--redis-url", envvar=None, help="Redis URL [env SASFLEET_REDIS_URL].")
    @click.option("--prefix", envvar=None, help="Queue/key prefix [env SASFLEET_PREFIX].")
    @functools.wraps(fn)
    def wrapper(
        *args: Any, amqp_url: str | None, redis_url: str | None, prefix: str | None, **kwargs: Any
    ) -> Any:
        try:
            settings = load_settings(amqp_url=amqp_url, redis_url=redis_url, prefix=prefix)
        except ValidationError as exc:
            raise click.UsageError(f"invalid configuration:\n{exc}") from exc
        if cli_tracing:
            # A CLI submission starts its job's trace (when OTEL_* configure tracing); the
            # provider flushes its spans when the process exits.
            setup_tracing("cli", instance_id("cli"))
        return fn(*args, settings=settings, **kwargs)

    return wrapper


def settings_options(fn: F) -> F:
    """Add --amqp-url, --redis-url and --prefix; pass ``settings`` (env + flags) instead."""
    return _with_settings(fn, cli_tracing=True)


def common_options(fn: F) -> F:
    """Settings flags plus --ready-file, --log-level and --metrics-port, for the three
    services (which set up their tracing in :func:`service_main`)."""

    @click.option(
        "--ready-file",
        type=click.Path(dir_okay=False),
        help="Touch this file once the service consumes (for harnesses).",
    )
    @click.option(
        "--log-level",
        default="INFO",
        show_default=True,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    )
    @click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Serve /metrics, /healthz and /readyz on this port (0: off) "
        "[env SASFLEET_METRICS_PORT].",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, settings: Settings, metrics_port: int | None, **kwargs: Any) -> Any:
        if metrics_port is not None:
            settings = settings.model_copy(update={"metrics_port": metrics_port})
        return fn(*args, settings=settings, **kwargs)

    return _with_settings(wrapper, cli_tracing=False)


def service_main(
    service: str,
    instance: str,
    log_level: str,
    main: Callable[[asyncio.Event], Awaitable[None]],
) -> None:
    """Run a service until SIGTERM/SIGINT, then let it drain; exit code 0 on a clean stop."""
    setup_logging(service, instance, log_level)
    setup_tracing(service, instance)

    async def runner() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        orphan_watch = asyncio.create_task(stop_with_parent(stop))
        try:
            await main(stop)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        finally:
            orphan_watch.cancel()

    try:
        run(runner())
    finally:
        shutdown_tracing()  # flush the spans still batched
    logging.getLogger(__name__).info("%s %s stopped", service, instance)
