"""The public JSON Schema of the submit contract, generated from the msgspec types."""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec

from sasfleet.shared.messages.events import JobFinished
from sasfleet.shared.messages.submit import SubmitBatch, SubmitJob


def submit_schema() -> dict[str, Any]:
    """JSON Schema of a submit message, of a batch of them (``x-batch``) and of the reply
    sent to its ``reply_to`` (``x-reply``)."""
    (submit, reply, batch), components = msgspec.json.schema_components(
        [SubmitJob, JobFinished, SubmitBatch]
    )
    # msgspec marks a tag field required, but decoding one struct type accepts it missing.
    definition = components["SubmitJob"]
    definition["required"] = [f for f in definition.get("required", []) if f != "kind"]
    if not definition["required"]:
        del definition["required"]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SAS Fleet submit message",
        **submit,
        "$defs": components,
        "x-reply": reply,
        "x-batch": batch,
    }
    normalised: dict[str, Any] = _normalise(schema)
    return normalised


def _normalise(node: Any) -> Any:
    """The same schema whatever msgspec release made it: descriptions taken from docstrings
    are dedented (msgspec 0.23 started to, earlier releases did not), and an optional
    field's ``anyOf`` lists ``null`` last (msgspec 0.22 reversed the order)."""
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _normalise(value) for key, value in node.items()}
    if isinstance(out.get("description"), str):
        out["description"] = inspect.cleandoc(out["description"])
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = sorted(out["anyOf"], key=lambda branch: branch == {"type": "null"})
    return out


def submit_schema_json() -> str:
    """The schema as stable, pretty JSON text (what docs/submit-message.md embeds)."""
    return json.dumps(submit_schema(), indent=2, sort_keys=True)


BEGIN = "<!-- submit-schema:begin -->"
END = "<!-- submit-schema:end -->"


def embed_in(text: str) -> str:
    """``text`` with the block between the schema markers replaced by the current schema."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n```json\n{submit_schema_json()}\n```\n{END}{tail}"


if __name__ == "__main__":
    # `make schema`: python -m sasfleet.shared.messages.schema docs/submit-message.md
    # replaces the block between the markers in that file with the current schema.
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m sasfleet.shared.messages.schema FILE (docs/submit-message.md)")
    path = sys.argv[1]
    with open(path, encoding="utf-8") as fh:
        current = fh.read()
    if BEGIN not in current or END not in current:
        sys.exit(f"{path} lacks the markers {BEGIN} and {END}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(embed_in(current))
