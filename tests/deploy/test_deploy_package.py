"""The package as a user installs it: a wheel built from the repository, installed into a
new virtual environment outside it, works from any directory (the demo included)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_support import REPO

UV = Path(sys.executable).with_name("uv")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """``uv build --wheel`` of the repository, installed with ``uv pip`` into a fresh venv
    (the lock's versions as constraints, so the run does not depend on today's releases)."""
    root = tmp_path_factory.mktemp("package")

    def uv(*args: str) -> None:
        done = subprocess.run(
            [str(UV), *args], capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"uv {' '.join(args)}:\n{done.stdout}\n{done.stderr}"

    uv("build", "--quiet", "--wheel", "--out-dir", str(root / "dist"), str(REPO))
    (wheel,) = (root / "dist").glob("sasfleet-*.whl")
    constraints = root / "constraints.txt"
    uv("export", "--quiet", "--frozen", "--no-dev", "--no-emit-project", "--project", str(REPO),
       "--no-hashes", "--output-file", str(constraints))  # fmt: skip
    uv("venv", "--quiet", str(root / "venv"))
    python = str(root / "venv" / "bin" / "python")
    uv("pip", "install", "--quiet", "--python", python, "-c", str(constraints), str(wheel))
    yield Installed(wheel, root / "venv")


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no venv of the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def test_the_wheel_holds_the_api_the_services_the_examples_and_the_state_scripts(
    installed: Installed,
) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for path in (
        "sasfleet/__init__.py",
        "sasfleet/py.typed",
        "sasfleet/cli/main.py",
        "sasfleet/scheduler/service.py",
        "sasfleet/agent/service.py",
        "sasfleet/supervisor/service.py",
        "sasfleet/examples/tasks.py",
        "sasfleet/tools/demo.py",
        "sasfleet/tools/chaos_tasks.py",
    ):
        assert path in names, path
    scripts = {p.name for p in (REPO / "shared" / "state" / "lua").glob("*.lua")}
    shipped = {Path(n).name for n in names if n.startswith("sasfleet/shared/state/lua/")}
    assert scripts and scripts <= shipped
    assert not [n for n in names if n.startswith(("tests/", "bench/", "sasfleet/tests"))]


def test_importing_the_api_or_a_pure_module_loads_no_io_library(
    installed: Installed, tmp_path: Path
) -> None:
    probe = (
        "import sys, sasfleet, sasfleet.shared.statemachine, sasfleet.shared.messages.submit; "
        "print(sorted(m for m in ('aio_pika', 'redis', 'opentelemetry') if m in sys.modules)); "
        "print(sasfleet.Client.__module__, len(sasfleet.__all__))"
    )
    done = subprocess.run(
        [installed.bin("python"), "-c", probe],
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lazy, client = done.stdout.splitlines()
    assert lazy == "[]", "importing sasfleet must not load the client's I/O libraries"
    assert client.startswith("sasfleet.shared.client ")


@pytest.mark.timeout(240)
def test_the_installed_package_runs_the_demo_from_any_directory(
    installed: Installed, tmp_path: Path, broker_and_redis_up: None
) -> None:
    done = subprocess.run(
        [installed.bin("sasfleet"), "demo", "--jobs", "40", "--agents", "1"],
        cwd=tmp_path,
        env=user_env(SASFLEET_PREFIX=f"it-{uuid.uuid4().hex[:8]}"),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "every job succeeded" in done.stdout
    assert "jobs succeeded" in done.stdout and "40" in done.stdout
