"""``sasfleet submit``: a one-step job from the command line."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
import msgspec

from sasfleet.cli.common import json_out, parse_duration, run
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings


@click.command()
@click.argument("task")
@click.option("--payload", default="null", help="JSON payload.")
@click.option("--pool", help="Agent pool.")
@click.option("--job-id", help="Choose the job id.")
@click.option(
    "--idempotency-key",
    help="Without --job-id, the job id is derived from it: a key seen before returns that job.",
)
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
                json_out({"job_id": jid}) if as_json else click.echo(jid)
                return 0
            try:
                outcome = await client.wait(jid, wait_timeout)
            except JobTimeout as exc:
                click.echo(str(exc), err=True)
                return 2
            if as_json:
                json_out(
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

    sys.exit(run(go()))
