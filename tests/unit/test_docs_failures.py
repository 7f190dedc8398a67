"""docs/observability.md's table of failure types is the Failure enum: every member, with
its label, kind and whether it is retried, and nothing else (so the docs cannot drift)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sasfleet.shared.statemachine import Failure

OBSERVABILITY_DOC = Path(__file__).parents[2] / "docs" / "observability.md"
HEADING = "## Failure types"
COLUMNS = ["type", "label", "kind", "retryable", "when"]
RETRYABLE = {"yes": True, "no": False}


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row, stripped of spaces and backticks."""
    return [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]


def failure_table() -> list[dict[str, str]]:
    """The rows of the first table under the heading, as column -> cell."""
    lines = OBSERVABILITY_DOC.read_text(encoding="utf-8").splitlines()
    assert lines.count(HEADING) == 1, f"{OBSERVABILITY_DOC} needs one {HEADING!r} section"
    after = lines[lines.index(HEADING) + 1 :]
    section = after[: next((i for i, s in enumerate(after) if s.startswith("#")), len(after))]
    first = next(i for i, s in enumerate(section) if s.startswith("|"))
    table = []
    for line in section[first:]:
        if not line.startswith("|"):
            break
        table.append(line)
    header, rule, *rows = table
    assert _cells(header) == COLUMNS
    assert set(rule.replace("|", "").strip()) <= {"-", ":", " "}
    return [dict(zip(COLUMNS, _cells(row), strict=True)) for row in rows]


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, str]]:
    table = failure_table()
    by_type = {row["type"]: row for row in table}
    assert len(by_type) == len(table), "a failure type is listed twice"
    return by_type


def test_the_table_lists_exactly_the_failure_members(rows: dict[str, dict[str, str]]) -> None:
    assert set(rows) == {f.value for f in Failure}


@pytest.mark.parametrize("failure", list(Failure), ids=lambda f: f.value)
def test_each_row_says_what_the_enum_says(
    rows: dict[str, dict[str, str]], failure: Failure
) -> None:
    row = rows[failure.value]
    assert row["label"] == failure.label
    assert row["kind"] == failure.kind.value
    assert row["retryable"] in RETRYABLE, f"retryable is 'yes' or 'no', not {row['retryable']!r}"
    assert RETRYABLE[row["retryable"]] is failure.retryable
    assert row["when"], f"say when {failure.value} happens"
