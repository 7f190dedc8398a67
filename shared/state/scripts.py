"""Loads the Lua scripts from ``lua/`` (each prefixed with the shared ``_lib.lua``)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def script_source(name: str) -> str:
    """The full text of script ``name`` (without ``.lua``), helpers included."""
    lua = resources.files("sasfleet.shared.state") / "lua"
    lib = (lua / "_lib.lua").read_text(encoding="utf-8")
    body = (lua / f"{name}.lua").read_text(encoding="utf-8")
    return f"{lib}\n{body}"


SCRIPT_NAMES = (
    "create_job",
    "fail_submission",
    "claim",
    "renew",
    "record",
    "advance",
    "recover",
    "fire_timer",
    "cancel",
    "claim_due",
)
