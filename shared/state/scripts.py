"""Loads the Lua scripts from ``lua/`` (each prefixed with the shared ``_lib.lua``)."""

from __future__ import annotations

from functools import cache
from importlib import resources

_LUA = resources.files("sasfleet.shared.state") / "lua"


@cache
def script_source(name: str) -> str:
    """The full text of script ``name`` (without ``.lua``), helpers included."""
    lib = (_LUA / "_lib.lua").read_text(encoding="utf-8")
    body = (_LUA / f"{name}.lua").read_text(encoding="utf-8")
    return f"{lib}\n{body}"


# One script per file; `_lib.lua` holds the helpers they share.
SCRIPT_NAMES = tuple(
    sorted(
        f.name.removesuffix(".lua")
        for f in _LUA.iterdir()
        if f.name.endswith(".lua") and not f.name.startswith("_")
    )
)
