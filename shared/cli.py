"""The ``sasfleet`` command. Service groups load lazily so ``sasfleet job show`` stays fast
and the shared package does not import the services at import time."""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec

from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.shared.statemachine import JobStatus

T = TypeVar("T")

_LAZY = {
    "scheduler": "sasfleet.scheduler.cli:scheduler",
    "agent": "sasfleet.agent.cli:agent",
    "supervisor": "sasfleet.supervisor.cli:supervisor",
    "demo": "sasfleet.shared.tools.demo:demo",
    "bench": "sasfleet.shared.tools.bench:bench",
    "dead": "sasfleet.shared.tools.dead:dead",
    "chaos": "sasfleet.shared.tools.chaos:chaos",
    "top": "sasfleet.shared.tools.top:top",
    "scale": "sasfleet.shared.tools.scale:scale",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _LAZY:
            module, _, attr = _LAZY[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.version_option(package_name="sasfleet")
def main() -> None:
    """SAS Fleet: reliable jobs on RabbitMQ and Redis (scheduler, agents, supervisor)."""


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _json_out(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2))


@main.command()
@click.argument("task")
@click.option("--payload", default="null", help="JSON payload.")
@click.option("--pool", help="Agent pool.")
@click.option("--job-id", help="Choose the job id.")
@click.option("--idempotency-key", help="A key seen before returns the existing job.")
@click.option("--max-attempts", type=click.IntRange(1, 100))
@click.option("--timeout", "timeout_s", type=float, help="Seconds one attempt may take.")
@click.option("--delay", "delay", help="Start later: 30s, 5m, 2h, 1d (or seconds).")
@click.option(
    "--at",
    "start_at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Start at this time (UTC unless an offset is given).",
)
@click.option("--wait", is_flag=True, help="Wait for the end; exit 0 only if it succeeded.")
@click.option("--wait-timeout", type=float, default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def submit(
    task: str,
    payload: str,
    pool: str | None,
    job_id: str | None,
    idempotency_key: str | None,
    max_attempts: int | None,
    timeout_s: float | None,
    delay: str | None,
    start_at: datetime | None,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
    settings: Settings,
) -> None:
    """Submit a one-step job running TASK; prints the job id."""
    from sasfleet.shared.client import Client
    from sasfleet.shared.errors import JobTimeout

    try:
        data = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from exc

    async def go() -> int:
        async with Client(settings) as client:
            try:
                jid = await client.submit(
                    task,
                    data,
                    pool=pool,
                    job_id=job_id,
                    idempotency_key=idempotency_key,
                    max_attempts=max_attempts,
                    timeout_s=timeout_s,
                    delay_s=parse_duration(delay) if delay else None,
                    start_at=start_at.replace(tzinfo=start_at.tzinfo or UTC) if start_at else None,
                )
            except (msgspec.ValidationError, ValueError) as exc:
                raise click.UsageError(f"invalid job: {exc}") from exc
            if not wait:
                _json_out({"job_id": jid}) if as_json else click.echo(jid)
                return 0
            try:
                outcome = await client.wait(jid, wait_timeout)
            except JobTimeout as exc:
                click.echo(str(exc), err=True)
                return 2
            if as_json:
                _json_out(
                    {
                        "job_id": jid,
                        "status": outcome.status,
                        "result": outcome.result,
                        "error": outcome.error,
                    }
                )
            else:
                click.echo(f"{jid} {outcome.status}")
                if outcome.result is not None:
                    click.echo(msgspec.json.encode(outcome.result).decode())
                if outcome.error is not None:
                    click.echo(f"error: {outcome.error.type}: {outcome.error.message}", err=True)
            return 0 if outcome.succeeded else 1

    sys.exit(_run(go()))


async def _with_redis(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from sasfleet.shared.state.connection import redis_for

    redis = redis_for(settings)
    try:
        return await fn(redis)
    finally:
        await redis.aclose()


@main.group()
def job() -> None:
    """Inspect one job."""


@job.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job document as JSON.")
@settings_options
def job_show(job_id: str, as_json: bool, settings: Settings) -> None:
    """Status, result or error, each step's attempts, and the full history of JOB_ID."""
    from sasfleet.shared.render import console, render_job
    from sasfleet.shared.state.reads import JobReader

    view = _run(_with_redis(settings, lambda r: JobReader(r, settings.prefix).job(job_id)))
    if view is None:
        click.echo(f"no job {job_id!r} (unknown, or expired)", err=True)
        sys.exit(1)
    if as_json:
        _json_out(view)
    else:
        render_job(console(), view)


@job.command("cancel")
@click.argument("job_id")
@settings_options
def job_cancel(job_id: str, settings: Settings) -> None:
    """Cancel JOB_ID: unstarted steps never start, a running step is asked to stop, and
    the steps that succeeded are compensated. Exit 1 if the job had already ended."""
    from sasfleet.shared.client import Client

    async def go() -> str:
        async with Client(settings) as client:
            return await client.cancel(job_id)

    answer = _run(go())
    if answer == "requested":
        click.echo(f"cancellation of {job_id} requested")
        return
    click.echo(f"job {job_id} is {answer}: nothing to cancel", err=True)
    sys.exit(1)


@main.group()
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
    _run(_with_redis(settings, lambda r: Schedules(r, settings.prefix).add(entry, first)))
    click.echo(f"schedule {name}: {task} at '{cron}', next {_iso(first)}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
@settings_options
def schedule_list(as_json: bool, settings: Settings) -> None:
    """Every schedule and its next tick."""
    from sasfleet.shared.state.schedules import Schedules

    found = _run(_with_redis(settings, lambda r: Schedules(r, settings.prefix).all()))
    if as_json:
        _json_out([{"schedule": s, "next_tick_ms": t} for s, t in found])
        return
    for entry, tick in found:
        click.echo(f"{entry.name}\t{entry.cron}\t{entry.job.task}\tnext {_iso(tick)}")


@schedule.command("remove")
@click.argument("name")
@settings_options
def schedule_remove(name: str, settings: Settings) -> None:
    """Remove schedule NAME (jobs it already fired are not touched)."""
    from sasfleet.shared.state.schedules import Schedules

    if not _run(_with_redis(settings, lambda r: Schedules(r, settings.prefix).remove(name))):
        click.echo(f"no schedule {name!r}", err=True)
        sys.exit(1)
    click.echo(f"schedule {name} removed")


def _iso(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d``, ``250ms`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 30s, 5m, 2h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@main.command()
@click.option("--status", type=click.Choice([s.value for s in JobStatus]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
@settings_options
def jobs(status: str | None, limit: int, as_json: bool, settings: Settings) -> None:
    """Recent jobs, newest first."""
    from sasfleet.shared.render import console, render_jobs
    from sasfleet.shared.state.reads import JobReader

    found = _run(_with_redis(settings, lambda r: JobReader(r, settings.prefix).jobs(status, limit)))
    if as_json:
        _json_out(found)
    else:
        render_jobs(console(), found)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@settings_options
def agents(as_json: bool, settings: Settings) -> None:
    """Live agents: pool, last heartbeat, running steps."""
    from sasfleet.shared.render import console, render_agents
    from sasfleet.shared.state.agents import AgentRegistry

    found = _run(_with_redis(settings, lambda r: AgentRegistry(r, settings.prefix).live()))
    if as_json:
        _json_out(found)
    else:
        render_agents(console(), found)


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
    _json_out(settings.redacted())


if __name__ == "__main__":
    main()
