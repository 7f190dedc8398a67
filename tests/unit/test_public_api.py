"""``import sasfleet`` is the public API: one grouped ``__all__``, every name from its home,
loaded on first use (that it loads no I/O library is checked on the installed wheel, in
tests/deploy/test_deploy_package.py); the docs' and the examples' code import only from it."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import sasfleet

REPO = Path(__file__).resolve().parents[2]
API = REPO / "api" / "__init__.py"


def test_all_lists_exactly_the_public_names_and_each_resolves_to_its_home() -> None:
    homes = sasfleet._HOMES
    assert sorted(sasfleet.__all__) == sorted(homes)
    assert len(set(sasfleet.__all__)) == len(sasfleet.__all__)
    for name, module in homes.items():
        assert getattr(sasfleet, name) is getattr(importlib.import_module(module), name), name
    assert {"Client", "JobOutcome", "SubmitJob", "StepSpec", "RetrySpec", "Registry"} <= set(
        sasfleet.__all__
    )
    assert {"StepContext", "NonRetryableError", "RetryAfter"} <= set(sasfleet.__all__)


def test_the_type_checking_imports_match_the_table_of_homes() -> None:
    # Type checkers read the imports under TYPE_CHECKING, the runtime reads _HOMES.
    tree = ast.parse(API.read_text(encoding="utf-8"))
    (guarded,) = [n for n in tree.body if isinstance(n, ast.If)]
    imported = {
        alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == sasfleet._HOMES


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        sasfleet.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("sasfleet.NoSuchThing resolved")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def sasfleet_imports(code: str) -> set[str]:
    return set(re.findall(r"^\s*(?:from|import) (sasfleet[\w.]*)", code, flags=re.MULTILINE))


def test_the_docs_and_the_examples_import_only_the_public_api() -> None:
    sources = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        sources[doc.name] = "\n".join(python_blocks(doc.read_text("utf-8")))
    for path in sorted((REPO / "examples").glob("*.py")):
        sources[str(path.relative_to(REPO))] = path.read_text("utf-8")
    assert sources["README.md"], "the README has Python examples"
    for where, code in sources.items():
        assert sasfleet_imports(code) <= {"sasfleet"}, where
