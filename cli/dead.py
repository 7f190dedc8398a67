"""``sasfleet dead list|retry|purge``: what was dead-lettered, and why."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from sasfleet.cli.common import json_out, run
from sasfleet.cli.render import console
from sasfleet.shared.amqp.deadletters import DeadLetterQueue
from sasfleet.shared.clihelpers import settings_options
from sasfleet.shared.config import Settings


def _dlq(settings: Settings) -> DeadLetterQueue:
    return DeadLetterQueue(settings.amqp_url.get_secret_value(), settings.prefix)


@click.group()
def dead() -> None:
    """Dead-lettered messages: list them, re-publish them, or purge them."""


@dead.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@settings_options
def dead_list(limit: int, as_json: bool, settings: Settings) -> None:
    """The oldest dead letters with their reasons (they stay in the queue)."""
    letters = run(_dlq(settings).peek(limit))
    if as_json:
        json_out(
            [
                {
                    "id": d.id,
                    "queue": d.queue,
                    "reason": d.reason,
                    "by": d.by,
                    "message_id": d.message_id,
                    "body": d.body.decode("utf-8", "replace"),
                }
                for d in letters
            ]
        )
        return
    table = Table()
    for col in ("id", "from queue", "reason", "dead-lettered by", "body"):
        table.add_column(col)
    for d in letters:
        body = d.body.decode("utf-8", "replace")
        table.add_row(d.id, d.queue, d.reason, d.by, body if len(body) < 60 else body[:59] + "…")
    console().print(table)


@dead.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Re-publish every dead letter.")
@settings_options
def dead_retry(ids: tuple[str, ...], everything: bool, settings: Settings) -> None:
    """Re-publish dead letters (by id, or --all) to the queues they came from."""
    if not ids and not everything:
        raise click.UsageError("name dead-letter ids or give --all")
    done = run(_dlq(settings).retry(None if everything else set(ids)))
    for d in done:
        click.echo(f"re-published {d.id} to {d.queue}")
    missing = set(ids) - {d.id for d in done}
    if missing:
        click.echo(f"not found: {', '.join(sorted(missing))}", err=True)
        sys.exit(1)


@dead.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask.")
@settings_options
def dead_purge(yes: bool, settings: Settings) -> None:
    """Delete every dead letter."""
    if not yes:
        click.confirm("Delete every dead-lettered message?", abort=True)
    click.echo(f"purged {run(_dlq(settings).purge())} dead letters")
