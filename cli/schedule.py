"""``sasfleet schedule add|list|remove``: periodic jobs from cron expressions."""

from __future__ import annotations

import sys
import time

import click
import msgspec

from sasfleet.cli.common import iso, json_out, run, with_redis
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings


@click.group()
def schedule() -> None:
    """Periodic jobs from cron expressions (UTC); each tick fires once across schedulers."""


@schedule.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("task")
@click.option("--payload", default="null", help="JSON payload.")
@click.option("--pool", help="Agent pool.")
@settings_options
def schedule_add(
    name: str, cron: str, task: str, payload: str, pool: str | None, settings: Settings
) -> None:
    """Add (or replace) schedule NAME: run TASK at every tick of CRON."""
    from sasfleet.shared.cron import next_tick_ms, validate
    from sasfleet.shared.messages.schedule import Schedule
    from sasfleet.shared.messages.submit import SubmitJob
    from sasfleet.shared.state.schedules import Schedules
    from sasfleet.shared.state.store import StateStore

    try:
        validate(cron)
        entry = Schedule(
            name=name,
            cron=cron,
            job=SubmitJob(task=task, payload=msgspec.json.decode(payload), pool=pool),
        )
        entry = msgspec.json.decode(msgspec.json.encode(entry), type=Schedule)  # validate
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise click.UsageError(str(exc)) from exc
    first = next_tick_ms(cron, int(time.time() * 1000))
    run(with_redis(settings, lambda r: Schedules(StateStore(r, settings.prefix)).add(entry, first)))
    click.echo(f"schedule {name}: {task} at '{cron}', next {iso(first)}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
@settings_options
def schedule_list(as_json: bool, settings: Settings) -> None:
    """Every schedule and its next tick."""
    from sasfleet.shared.state.schedules import Schedules
    from sasfleet.shared.state.store import StateStore

    found = run(with_redis(settings, lambda r: Schedules(StateStore(r, settings.prefix)).all()))
    if as_json:
        json_out([{"schedule": s, "next_tick_ms": t} for s, t in found])
        return
    for entry, tick in found:
        click.echo(f"{entry.name}\t{entry.cron}\t{entry.job.task}\tnext {iso(tick)}")


@schedule.command("remove")
@click.argument("name")
@settings_options
def schedule_remove(name: str, settings: Settings) -> None:
    """Remove schedule NAME (jobs it already fired are not touched)."""
    from sasfleet.shared.state.schedules import Schedules
    from sasfleet.shared.state.store import StateStore

    if not run(
        with_redis(settings, lambda r: Schedules(StateStore(r, settings.prefix)).remove(name))
    ):
        click.echo(f"no schedule {name!r}", err=True)
        sys.exit(1)
    click.echo(f"schedule {name} removed")
