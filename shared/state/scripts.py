"""Loads the Lua scripts from ``lua/``: each is the generated prelude (the state machine's
statuses, moves and failure names, and the fields of a step dispatch), then the shared
``_lib.lua``, then the script's own file."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from importlib import resources

from sasfleet.shared.messages.dispatch import StepDispatch
from sasfleet.shared.messages.submit import StepSpec
from sasfleet.shared.statemachine import (
    JOB_MOVES,
    JOB_TERMINAL,
    STEP_MOVES,
    Failure,
    JobStatus,
    StepStatus,
)

_LUA = resources.files("sasfleet.shared.state") / "lua"


def _str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _set(values: Iterable[str]) -> str:
    return "{" + ", ".join(f"[{_str(v)}] = true" for v in sorted(values)) + "}"


def _names(enum: type[StrEnum]) -> str:
    return "{" + ", ".join(f"{m.name} = {_str(m.value)}" for m in enum) + "}"


def _targets(table: dict[typing.Any, typing.Any]) -> str:
    return "{" + ", ".join(f"[{_str(m)}] = {_str(to)}" for m, (_, to) in table.items()) + "}"


def _sources(table: dict[typing.Any, typing.Any]) -> str:
    """Each legal (move, from) pair as one "move|from" key: one flat table is cheaper to
    build on every call than a table per move."""
    return _set(f"{m}|{src}" for m, (sources, _) in table.items() for src in sources)


def _array(values: Iterable[str]) -> str:
    return "{" + ", ".join(_str(v) for v in values) + "}"


def _is_str(annotation: object) -> bool:
    """Whether a dispatch field is written into JSON as a string (else as its stored text:
    a number, or JSON kept as text in the step's record)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] is str


def prelude() -> str:
    """The Lua tables every script starts with, generated from the state machine and the
    dispatch message. Built on every call of a script, so they are kept flat."""
    hints = typing.get_type_hints(StepDispatch)
    fields = StepDispatch.__struct_fields__
    return (
        "\n".join(
            [
                "-- Generated from the state machine and the message types (scripts.py).",
                f"local STEP = {_names(StepStatus)}",
                f"local JOB = {_names(JobStatus)}",
                f"local FAILURE = {_names(Failure)}",
                f"local FINAL_FAILURES = {_set(f.value for f in Failure if not f.retryable)}",
                f"local STEP_TO = {_targets(STEP_MOVES)}",
                f"local STEP_FROM = {_sources(STEP_MOVES)}",
                f"local JOB_TO = {_targets(JOB_MOVES)}",
                f"local JOB_FROM = {_sources(JOB_MOVES)}",
                f"local JOB_TERMINAL = {_set(JOB_TERMINAL)}",
                f"local STEP_OPTIONS = {_array(StepSpec.__struct_fields__)}",
                f"local DISPATCH_FIELDS = {_array(fields)}",
                f"local DISPATCH_STRINGS = {_set(f for f in fields if _is_str(hints[f]))}",
                f"local DISPATCH_READ = {_array([*fields, 'pool', 'priority'])}",
            ]
        )
        + "\n"
    )


_DEFINITION = re.compile(r"local (?:function )?(\w+)")
# What is not code, for finding the names a chunk uses: strings, then comments.
_NOT_CODE = re.compile(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|--.*")


def _definitions(text: str) -> dict[str, str]:
    """The top-level definitions of Lua ``text`` by name: each line that starts with
    ``local NAME`` or ``local function NAME``, with the comment lines above it, up to the
    next definition."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _DEFINITION.match(line)]
    chunks: dict[str, str] = {}
    for n, i in enumerate(starts):
        first = i
        while first > 0 and lines[first - 1].startswith("--"):
            first -= 1
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        while end - 1 > i and lines[end - 1].startswith("--"):
            end -= 1  # the next definition's comment
        name = _DEFINITION.match(lines[i]).group(1)  # type: ignore[union-attr]
        chunks[name] = "".join(lines[first:end])
    return chunks


@cache
def _chunks() -> dict[str, str]:
    """The prelude's and ``_lib.lua``'s definitions, in order."""
    return {**_definitions(prelude()), **_definitions((_LUA / "_lib.lua").read_text("utf-8"))}


@cache
def script_source(name: str) -> str:
    """The full text of script ``name`` (without ``.lua``): the prelude's tables and
    ``_lib.lua``'s helpers that it uses (directly or through each other), then its own.

    Redis runs a script's whole text on every call, so leaving out what it does not use
    saves building tables and closures each time."""
    body = (_LUA / f"{name}.lua").read_text(encoding="utf-8")
    chunks = _chunks()
    used: set[str] = set()
    pending = [body]
    while pending:
        code = _NOT_CODE.sub("", pending.pop())
        for chunk_name, chunk in chunks.items():
            if chunk_name not in used and re.search(rf"\b{chunk_name}\b", code):
                used.add(chunk_name)
                pending.append(chunk)
    return "".join(chunk for n, chunk in chunks.items() if n in used) + body


# One script per file; `_lib.lua` holds the helpers they share.
SCRIPT_NAMES = tuple(
    sorted(
        f.name.removesuffix(".lua")
        for f in _LUA.iterdir()
        if f.name.endswith(".lua") and not f.name.startswith("_")
    )
)
