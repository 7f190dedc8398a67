"""Service lifecycle helpers: signals to a stop event, and periodic loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

from sasfleet.shared.config import mask_secrets

log = logging.getLogger(__name__)
T = TypeVar("T")


def run(main: Awaitable[T]) -> T:
    """Run ``main`` on uvloop, the libuv event loop: the services spend much of their time
    in socket reads and writes, which it does with far less Python per call."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)  # type: ignore[arg-type]


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; the service then drains and exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


# Set by LocalFleet to its own pid: a service it started stops when that process is gone.
PARENT_PID_ENV = "SASFLEET_STOP_WITH_PARENT"
_PARENT_CHECK_S = 1.0


async def stop_with_parent(stop: asyncio.Event) -> None:
    """Set ``stop`` once the process named by ``SASFLEET_STOP_WITH_PARENT`` is no longer
    this one's parent (it died, even of SIGKILL, and the service was re-parented). Without
    the variable, returns at once: a deployed service is supervised by its platform."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit():
        return

    async def check() -> bool:
        if os.getppid() != int(parent):
            log.warning("the process that started this service (%s) is gone; stopping", parent)
            stop.set()
        return False

    await every(_PARENT_CHECK_S, stop, check)


async def every(
    interval_s: float, stop: asyncio.Event, work: Callable[[], Awaitable[bool]]
) -> None:
    """Run ``work`` every ``interval_s`` until ``stop``; again at once when it returns True.

    An exception in one round is logged and the loop goes on: a passing Redis or broker
    outage must not end a service.
    """
    while not stop.is_set():
        busy = False
        try:
            busy = await work()
        except Exception:
            log.exception("periodic work failed; retrying next round")
        if busy:
            await asyncio.sleep(0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def retry_until_up(what: str, stop: asyncio.Event, connect: Callable[[], Awaitable[T]]) -> T:
    """Call ``connect`` until it succeeds: a service waits for its dependencies, it does not
    crash-loop. Raises ``asyncio.CancelledError`` if ``stop`` is set first."""
    delay = 0.2
    while True:
        try:
            return await connect()
        except Exception as exc:
            if stop.is_set():
                raise asyncio.CancelledError from exc
            log.warning(
                "%s unavailable (%s); retrying in %.1fs", what, mask_secrets(str(exc)), delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 5.0)


def mark_ready(path: str | None) -> None:
    """Touch ``path`` (the ``--ready-file`` flag) once the service consumes: for harnesses."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("ready\n")
