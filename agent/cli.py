"""``sasfleet agent ...``"""

from __future__ import annotations

import asyncio
import sys

import click

from sasfleet.agent.registry import load_registry
from sasfleet.agent.service import AgentService
from sasfleet.shared.clihelpers import common_options, service_main
from sasfleet.shared.errors import ConfigError


@click.group()
def agent() -> None:
    """Agents: run task handlers for a pool."""


@agent.command("run")
@click.argument("module")
@click.option("--pool", default=None, help="Pool to serve [default: the fleet's default pool].")
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Steps run at once (also the prefetch).",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=float,
    help="Seconds running steps get to finish on SIGTERM.",
)
@common_options
def run(module, pool, concurrency, grace, settings, ready_file, log_level):  # type: ignore[no-untyped-def]
    """Run an agent for the tasks that MODULE registers (e.g. sasfleet.examples.tasks)."""
    if "" not in sys.path:
        sys.path.insert(0, "")  # task modules are found from the working directory
    try:
        registry = load_registry(module)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    service = AgentService(settings, registry, pool or settings.default_pool, concurrency, grace)

    async def main(stop: asyncio.Event) -> None:
        await service.run(stop, ready_file)

    service_main("agent", service.instance, log_level, main)
