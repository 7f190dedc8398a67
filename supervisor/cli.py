"""``sasfleet supervisor ...``"""

from __future__ import annotations

import asyncio

import click

from sasfleet.shared.clihelpers import common_options, service_main
from sasfleet.supervisor.service import SupervisorService


@click.group()
def supervisor() -> None:
    """The supervisor: recovers steps whose deadline passed."""


@supervisor.command("run")
@common_options
def run(settings, ready_file, log_level):  # type: ignore[no-untyped-def]
    """Run a supervisor until SIGTERM/SIGINT."""
    service = SupervisorService(settings)

    async def main(stop: asyncio.Event) -> None:
        await service.run(stop, ready_file)

    service_main("supervisor", service.instance, log_level, main)
