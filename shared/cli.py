"""The ``sasfleet`` command. Service groups load lazily so ``sasfleet job show`` stays fast
and the shared package does not import the services at import time."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console

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
                )
            except msgspec.ValidationError as exc:
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
    from sasfleet.shared.state.store import connect_redis

    redis = connect_redis(settings.redis_url.get_secret_value())
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
    from sasfleet.shared.render import render_job
    from sasfleet.shared.state.reads import JobReader

    view = _run(_with_redis(settings, lambda r: JobReader(r, settings.prefix).job(job_id)))
    if view is None:
        click.echo(f"no job {job_id!r} (unknown, or expired)", err=True)
        sys.exit(1)
    if as_json:
        _json_out(view)
    else:
        render_job(Console(), view)


@main.command()
@click.option("--status", type=click.Choice([s.value for s in JobStatus]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
@settings_options
def jobs(status: str | None, limit: int, as_json: bool, settings: Settings) -> None:
    """Recent jobs, newest first."""
    from sasfleet.shared.render import render_jobs
    from sasfleet.shared.state.reads import JobReader

    found = _run(_with_redis(settings, lambda r: JobReader(r, settings.prefix).jobs(status, limit)))
    if as_json:
        _json_out(found)
    else:
        render_jobs(Console(), found)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@settings_options
def agents(as_json: bool, settings: Settings) -> None:
    """Live agents: pool, last heartbeat, running steps."""
    from sasfleet.shared.render import render_agents
    from sasfleet.shared.state.agents import AgentRegistry

    found = _run(_with_redis(settings, lambda r: AgentRegistry(r, settings.prefix).live()))
    if as_json:
        _json_out(found)
    else:
        render_agents(Console(), found)


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
