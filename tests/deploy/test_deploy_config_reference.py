"""The configuration reference (docs/configuration.md) against the code: every setting of
shared/config.py (with its default) and every flag of the service commands is in it, and
nothing else; and `sasfleet config show` prints the effective configuration with secrets
masked."""

from __future__ import annotations

import json
import re
from typing import Any

import click
from click.testing import CliRunner
from deploy_support import REPO, assert_cli_accepts
from pydantic import SecretStr

from sasfleet.cli.main import main
from sasfleet.shared.config import ENV_PREFIX, Settings

CONFIGURATION = REPO / "docs" / "configuration.md"
SERVICE_RUNS = (
    ["scheduler", "run"],
    ["supervisor", "run"],
    ["agent", "run", "sasfleet.examples.tasks"],
)


def reference() -> str:
    """The configuration page: its settings table, its flags table and its other tables
    (whose rows name no ``SASFLEET_*`` variable or ``--flag`` in their first cell)."""
    return CONFIGURATION.read_text(encoding="utf-8")


def table_rows(text: str) -> list[list[str]]:
    """Body rows of every Markdown table in ``text``, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| :]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def documented_variables() -> dict[str, str]:
    """``SASFLEET_*`` variable -> its default cell, from the configuration page's tables."""
    found = {}
    for cells in table_rows(reference()):
        names = re.findall(r"`(SASFLEET_[A-Z0-9_]+)`", cells[0])
        if names:
            assert len(names) == 1, f"one variable per row: {cells[0]}"
            found[names[0]] = cells[1]
    return found


def documented_flags() -> dict[str, str]:
    """``--flag`` -> its default cell, from the configuration page's tables."""
    found = {}
    for cells in table_rows(reference()):
        flag = re.match(r"`(--[a-z-]+)", cells[0])
        if flag:
            found[flag.group(1)] = cells[2]
    return found


def default_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def same_default(cell: str, value: Any) -> bool:
    if value in ("", None):
        return cell == "(none)"
    written = cell.strip("`")
    if isinstance(value, bool):  # written as in an environment variable
        return written == str(value).lower()
    if not isinstance(value, int | float):
        return written == default_text(value)
    try:
        return float(written) == float(value)
    except ValueError:
        return False


def test_every_setting_is_in_the_reference_with_its_default():
    documented = documented_variables()
    fields = {f"{ENV_PREFIX}{name.upper()}": f for name, f in Settings.model_fields.items()}
    missing = sorted(set(fields) - set(documented))
    unknown = sorted(set(documented) - set(fields))
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
    assert not unknown, f"docs/configuration.md documents variables that are no settings: {unknown}"
    for name, field in fields.items():
        assert same_default(documented[name], field.default), (
            f"{name}: docs/configuration.md says {documented[name]}, "
            f"shared/config.py {field.default!r}"
        )


def test_file_variants_are_documented():
    assert "SASFLEET_<NAME>_FILE" in reference()


def service_options() -> dict[str, click.Option]:
    options = {}
    for argv in SERVICE_RUNS:
        command = assert_cli_accepts(argv, "docs/configuration.md").command
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    if opt.startswith("--"):
                        options[opt] = param
    return options


def test_every_service_flag_is_in_the_reference_with_its_default():
    documented = documented_flags()
    options = service_options()
    missing = sorted(set(options) - set(documented) - {"--help"})
    unknown = sorted(set(documented) - set(options))
    assert not missing, f"flags missing from docs/configuration.md: {missing}"
    assert not unknown, f"docs/configuration.md documents flags the services do not have: {unknown}"
    for flag, option in options.items():
        if flag == "--help":
            continue
        cell = documented[flag]
        if option.default is None or option.default is getattr(click.core, "UNSET", None):
            # Unset: the setting (variable) it overrides, or nothing.
            assert cell == "(none)" or re.fullmatch(r"`SASFLEET_[A-Z0-9_]+`", cell), flag
        else:
            assert same_default(cell, option.default), (flag, cell, option.default)


def test_config_show_prints_every_setting_with_secrets_masked(tmp_path):
    secret_file = tmp_path / "redis-url"
    secret_file.write_text("redis://agent:file-secret@redis:6379/0\n", encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["config", "show"],
        env={
            "SASFLEET_AMQP_URL": "amqp://scheduler:env-secret@rabbitmq:5672/",
            "SASFLEET_REDIS_URL_FILE": str(secret_file),
            "SASFLEET_MAX_ATTEMPTS": "7",
        },
    )
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output
    shown = json.loads(result.output)
    assert set(shown) == set(Settings.model_fields)
    assert shown["amqp_url"] == "amqp://scheduler:***@rabbitmq:5672/"
    assert shown["redis_url"] == "redis://agent:***@redis:6379/0"
    assert shown["max_attempts"] == 7
