"""A periodic job: CLI -> Redis -> scheduler."""

from __future__ import annotations

from typing import Annotated

import msgspec

from sasfleet.shared.messages.submit import SubmitJob

ScheduleName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
]


class Schedule(msgspec.Struct, frozen=True, kw_only=True, tag="schedule", tag_field="kind"):
    """Submit ``job`` at every tick of ``cron`` (UTC). Each tick's job has the id
    ``cron-<name>-<tick ms>``, so several schedulers create it once."""

    name: ScheduleName
    cron: str
    job: SubmitJob
