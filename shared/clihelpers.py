"""Flags every command shares, and the process main of every service."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import click
from pydantic import ValidationError

from sasfleet.shared.config import load_settings
from sasfleet.shared.runtime import stop_on_signals
from sasfleet.shared.telemetry.logs import setup_logging

F = Callable[..., Any]


def settings_options(fn: F) -> F:
    """Add --amqp-url, --redis-url and --prefix; pass ``settings`` (env + flags) instead."""

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
        return fn(*args, settings=settings, **kwargs)

    return wrapper


def common_options(fn: F) -> F:
    """Settings flags plus --ready-file and --log-level, for the three services."""

    @settings_options
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
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def service_main(
    service: str,
    instance: str,
    log_level: str,
    main: Callable[[asyncio.Event], Awaitable[None]],
) -> None:
    """Run a service until SIGTERM/SIGINT, then let it drain; exit code 0 on a clean stop."""
    setup_logging(service, instance, log_level)

    async def runner() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        try:
            await main(stop)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise

    asyncio.run(runner())
    logging.getLogger(__name__).info("%s %s stopped", service, instance)
