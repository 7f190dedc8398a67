"""``sasfleet scheduler ...``"""

from __future__ import annotations

import asyncio

import click

from sasfleet.scheduler.service import SchedulerService
from sasfleet.shared.clihelpers import common_options, service_main


@click.group()
def scheduler() -> None:
    """The scheduler: accepts jobs, dispatches steps, advances jobs."""


@scheduler.command("run")
@common_options
def run(settings, ready_file, log_level):  # type: ignore[no-untyped-def]
    """Run a scheduler until SIGTERM/SIGINT."""
    service = SchedulerService(settings)

    async def main(stop: asyncio.Event) -> None:
        await service.run(stop, ready_file)

    service_main("scheduler", service.instance, log_level, main)
