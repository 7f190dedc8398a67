"""deploy/Dockerfile, checked without a Docker engine: hadolint, then what it names against
the code (entrypoint, user, settings, port, copied paths)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from deploy_support import DEPLOY, REPO, assert_known_env, load_yaml_documents
from packaging.specifiers import SpecifierSet

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            env.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", args)))
    return env


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_slim_python_base_matching_requires_python():
    built = stages(DOCKERFILE)
    assert len(built) >= 2, "a build stage and a runtime stage"
    args = dict(a.split("=", 1) for k, a in instructions(DOCKERFILE) if k == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    match = re.fullmatch(r"python:(3\.\d+)-slim(-\w+)?", base)
    assert match, f"runtime base {base!r} is not a slim Python image"
    assert match.group(1) + ".0" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    runtime = built[-1]
    assert runtime[0][1].split()[0] == "${PYTHON_IMAGE}"


def locked_version(package: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return str(version)


def test_image_installs_exactly_the_locked_runtime_packages():
    build, runtime = stages(DOCKERFILE)[0], stages(DOCKERFILE)[-1]
    syncs = [a for k, a in build if k == "RUN" and "uv sync" in a]
    assert syncs and all("--frozen" in a and "--no-dev" in a for a in syncs)
    runs = [a for k, a in instructions(DOCKERFILE) if k == "RUN"]
    assert not [a for a in runs if ".[" in a or re.search(r"pip install [^\n]*\s\.(\s|$)", a)]
    (uv_arg,) = [a for k, a in build if k == "ARG" and a.startswith("UV_VERSION=")]
    assert uv_arg.split("=", 1)[1] == locked_version("uv"), "the image's uv is the lock's"
    # The runtime stage installs nothing: it takes the build stage's environment whole.
    assert not [a for k, a in runtime if k == "RUN" and "install" in a]
    taken = [a for k, a in runtime if k == "COPY" and "--from=build" in a]
    assert taken == ["--from=build /opt/sasfleet /opt/sasfleet"]
    assert env_of(runtime)["PATH"].startswith("/opt/sasfleet/bin:")
    # No sources in the runtime image (the example handlers are in the package).
    assert not [a for k, a in runtime if k == "COPY" and "--from" not in a]


def test_runs_as_the_non_root_user_the_manifests_expect():
    runtime = stages(DOCKERFILE)[-1]
    (user,) = [a for k, a in runtime if k == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    for doc in load_yaml_documents(DEPLOY / "k8s" / "scheduler.yaml"):
        assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_exec_form_entrypoint_is_the_sasfleet_command():
    runtime = stages(DOCKERFILE)[-1]
    (entrypoint,) = [a for k, a in runtime if k == "ENTRYPOINT"]
    (cmd,) = [a for k, a in runtime if k == "CMD"]
    # Exec form (JSON arrays): SIGTERM reaches the Python process itself, not a shell that
    # would not pass it on, so an agent drains.
    assert json.loads(entrypoint) == ["sasfleet"]
    assert isinstance(json.loads(cmd), list)
    assert "sasfleet" in PYPROJECT["project"]["scripts"]
    stop = [a for k, a in runtime if k == "STOPSIGNAL"]
    assert stop in ([], ["SIGTERM"])


def test_environment_names_settings_and_the_exposed_metrics_port():
    runtime = stages(DOCKERFILE)[-1]
    env = env_of(runtime)
    assert_known_env([n for n in env if n.startswith(("SASFLEET_", "OTEL_"))], "Dockerfile")
    exposed = [int(p) for k, a in runtime if k == "EXPOSE" for p in a.split()]
    assert exposed == [int(env["SASFLEET_METRICS_PORT"])]
    assert env["PYTHONPATH"] == "/app"
    (workdir,) = [a for k, a in runtime if k == "WORKDIR"]
    assert workdir == "/app"


def test_dockerignore_keeps_secrets_and_clutter_out_of_the_context():
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", ".env", "deploy"} <= ignored
    # What the build needs stays in: pyproject.toml's readme and the package folders.
    assert not ignored & {"README.md", "pyproject.toml", "uv.lock", "shared", "examples"}
