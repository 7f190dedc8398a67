"""The ``sasfleet`` command: the three services' groups, the operator commands and the
tools (demo, bench, scale, chaos), each loaded when it is called, so ``sasfleet job show``
imports neither the services nor the tools."""

from __future__ import annotations

import importlib

import click

from sasfleet.cli.common import json_out
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings

# name -> "module:attribute" of its click command
COMMANDS = {
    # the services
    "scheduler": "sasfleet.scheduler.cli:scheduler",
    "agent": "sasfleet.agent.cli:agent",
    "supervisor": "sasfleet.supervisor.cli:supervisor",
    # operating a fleet
    "submit": "sasfleet.cli.submit:submit",
    "jobs": "sasfleet.cli.jobs:jobs",
    "job": "sasfleet.cli.jobs:job",
    "agents": "sasfleet.cli.jobs:agents",
    "schedule": "sasfleet.cli.schedule:schedule",
    "dead": "sasfleet.cli.dead:dead",
    "top": "sasfleet.cli.top:top",
    # the tools
    "demo": "sasfleet.tools.demo:demo",
    "bench": "sasfleet.tools.bench:bench",
    "scale": "sasfleet.tools.scale:scale",
    "chaos": "sasfleet.tools.chaos:chaos",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they are called (or listed)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, _, attr = COMMANDS[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.version_option(package_name="sasfleet")
def main() -> None:
    """SAS Fleet: reliable jobs on RabbitMQ and Redis (scheduler, agents, supervisor)."""


@main.command()
def schema() -> None:
    """Print the JSON Schema of the submit message (the public contract)."""
    from sasfleet.shared.messages.schema import submit_schema_json

    click.echo(submit_schema_json())


@main.group()
def config() -> None:
    """Configuration."""


@config.command("show")
@settings_options
def config_show(settings: Settings) -> None:
    """The effective configuration, secrets masked."""
    json_out(settings.redacted())
