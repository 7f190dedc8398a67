"""The public JSON Schema of the submit contract, and the copy in docs/submit-message.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sasfleet.shared.messages.schema import _normalise, submit_schema, submit_schema_json
from sasfleet.shared.messages.submit import SCHEMA_VERSION

SUBMIT_DOC = Path(__file__).parents[2] / "docs" / "submit-message.md"
BEGIN, END = "<!-- submit-schema:begin -->", "<!-- submit-schema:end -->"


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``#/$defs/...`` reference."""
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref
    return schema["$defs"][ref.removeprefix("#/$defs/")]


def non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property (``anyOf [T, null]``)."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    assert len(branches) == 1, prop
    return branches[0]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return submit_schema()


@pytest.fixture(scope="module")
def submit_def(schema: dict[str, Any]) -> dict[str, Any]:
    return resolve(schema, schema)


def test_schema_declares_draft_2020_12_with_a_title(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "SAS Fleet submit message"


def test_every_reference_points_at_a_definition(schema: dict[str, Any]) -> None:
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema))
    assert refs
    for ref in refs:
        assert ref.removeprefix("#/$defs/") in schema["$defs"], ref


def test_submit_object_lists_the_contract_fields_and_refuses_others(
    submit_def: dict[str, Any],
) -> None:
    assert submit_def["type"] == "object"
    assert submit_def["additionalProperties"] is False
    assert {"task", "payload", "steps", "job_id", "idempotency_key"} <= set(
        submit_def["properties"]
    )


def test_submit_fields_carry_their_limits(
    schema: dict[str, Any], submit_def: dict[str, Any]
) -> None:
    props = submit_def["properties"]
    task = non_null(props["task"])
    assert (task["type"], task["minLength"], task["maxLength"]) == ("string", 1, 200)
    assert task["pattern"] == "^[A-Za-z_][A-Za-z0-9_.:-]*$"
    attempts = non_null(props["max_attempts"])
    assert (attempts["type"], attempts["minimum"], attempts["maximum"]) == ("integer", 1, 100)
    steps = non_null(props["steps"])
    assert (steps["type"], steps["minItems"], steps["maxItems"]) == ("array", 1, 100)
    assert resolve(schema, steps["items"])["required"] == ["task"]
    assert props["v"]["maximum"] == SCHEMA_VERSION
    assert props["payload"] == {"default": None}  # any JSON value


def test_optional_fields_are_not_required(submit_def: dict[str, Any]) -> None:
    required = set(submit_def.get("required", []))
    for name in ("task", "payload", "steps", "job_id", "idempotency_key", "v"):
        assert name not in required
        assert "default" in submit_def["properties"][name]


def test_kind_tag_is_optional_as_on_the_wire(submit_def: dict[str, Any]) -> None:
    assert "kind" not in submit_def.get("required", [])


def test_reply_schema_describes_job_finished(schema: dict[str, Any]) -> None:
    reply = resolve(schema, schema["x-reply"])
    assert reply["properties"]["kind"] == {"enum": ["job_finished"]}
    assert {"job_id", "status"} <= set(reply["required"])


def test_schema_json_is_stable_sorted_and_equal_to_the_schema() -> None:
    text = submit_schema_json()
    assert text == submit_schema_json()
    assert json.loads(text) == submit_schema()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True)


def test_the_submit_message_page_embeds_the_generated_schema() -> None:
    assert SUBMIT_DOC.is_file(), f"{SUBMIT_DOC} is missing"
    text = SUBMIT_DOC.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert BEGIN in lines and END in lines, f"{SUBMIT_DOC.name} lacks the submit-schema markers"
    block = "\n".join(lines[lines.index(BEGIN) + 1 : lines.index(END)])
    fenced = re.fullmatch(r"\s*```json\n(.*?)\n```\s*", block, flags=re.DOTALL)
    assert fenced, "the block between the markers must be one ```json fence"
    assert fenced.group(1) == submit_schema_json(), (
        f"the schema in {SUBMIT_DOC.name} drifted: run `make schema` to regenerate it"
    )


def test_schema_does_not_depend_on_how_msgspec_formats_docstrings_or_unions() -> None:
    # msgspec 0.18-0.21 keep a docstring's indentation and list `null` first in an optional
    # field's anyOf; 0.22 reversed the union, 0.23 dedents. The generator normalises both.
    raw = {
        "description": "First line\n    second line.",
        "properties": {"x": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/X"}]}},
    }
    assert _normalise(raw) == {
        "description": "First line\nsecond line.",
        "properties": {"x": {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]}},
    }
    text = submit_schema_json()
    assert "\\n    " not in text
    for union in re.findall(r'"anyOf": \[(.*?)\]', json.dumps(submit_schema())):
        assert '"null"' not in union or union.endswith('{"type": "null"}')
