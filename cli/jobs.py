"""``sasfleet jobs``, ``job show|cancel`` and ``agents``: what the fleet holds and runs."""

from __future__ import annotations

import sys

import click

from sasfleet.cli.common import json_out, run, with_redis
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings
from sasfleet.shared.statemachine import JobStatus


@click.command()
@click.option("--status", type=click.Choice([s.value for s in JobStatus]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
@settings_options
def jobs(status: str | None, limit: int, as_json: bool, settings: Settings) -> None:
    """Recent jobs, newest first."""
    from sasfleet.cli.render import console, render_jobs
    from sasfleet.shared.state.reads import JobReader

    found = run(with_redis(settings, lambda r: JobReader(r, settings.prefix).jobs(status, limit)))
    if as_json:
        json_out(found)
    else:
        render_jobs(console(), found)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@settings_options
def agents(as_json: bool, settings: Settings) -> None:
    """Live agents: pool, last heartbeat, running steps."""
    from sasfleet.cli.render import console, render_agents
    from sasfleet.shared.state.agents import AgentRegistry

    found = run(with_redis(settings, lambda r: AgentRegistry(r, settings.prefix).live()))
    if as_json:
        json_out(found)
    else:
        render_agents(console(), found)


@click.group()
def job() -> None:
    """Inspect one job."""


@job.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job document as JSON.")
@settings_options
def job_show(job_id: str, as_json: bool, settings: Settings) -> None:
    """Status, result or error, each step's attempts, and the full history of JOB_ID."""
    from sasfleet.cli.render import console, render_job
    from sasfleet.shared.state.reads import JobReader

    view = run(with_redis(settings, lambda r: JobReader(r, settings.prefix).job(job_id)))
    if view is None:
        click.echo(f"no job {job_id!r} (unknown, or expired)", err=True)
        sys.exit(1)
    if as_json:
        json_out(view)
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

    answer = run(go())
    if answer == "requested":
        click.echo(f"cancellation of {job_id} requested")
        return
    click.echo(f"job {job_id} is {answer}: nothing to cancel", err=True)
    sys.exit(1)
