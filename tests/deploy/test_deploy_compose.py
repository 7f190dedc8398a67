"""deploy/compose.yaml and deploy/compose.services.yaml, checked without a Docker engine:
the Compose Specification's JSON Schema (vendored by check-jsonschema), then every command,
port, probe, file and variable they name against the code and the other deploy files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import (
    DEFINITIONS,
    DEPLOY,
    ENV_EXAMPLE,
    REDIS_ACL,
    assert_cli_accepts,
    assert_known_env,
    assert_task_module,
    served,
    service_of,
)

from sasfleet.shared.config import Settings

COMPOSE = DEPLOY / "compose.yaml"
SERVICES_ONLY = DEPLOY / "compose.services.yaml"
FLEET = ("scheduler", "supervisor", "agent")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def substituted(text: str) -> str:
    """``text`` with every ${...} interpolation replaced by ``INTERPOLATED``."""
    return INTERPOLATION.sub("INTERPOLATED", text)


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)  # resolves the x-fleet anchors and merges
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    return services


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    return {k: v for k, v in pairs}


def template_vars(path: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text(encoding="utf-8")))


def test_compose_files_match_the_compose_specification():
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE), str(SERVICES_ONLY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_stack(services):
    assert set(services) == {"rabbitmq", "redis", "jaeger", *FLEET, "cli"}
    assert services["rabbitmq"]["image"].endswith("-management")
    assert "127.0.0.1:15672:15672" in services["rabbitmq"]["ports"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    # Jaeger v2 (v1 is end of life), OTLP gRPC 4317 and HTTP 4318 reachable.
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", services["jaeger"]["image"])
    ports = {p.rsplit(":", 1)[-1] for p in services["jaeger"]["ports"]}
    assert {"4317", "4318", "16686"} <= ports
    assert {c.rsplit(":", 1)[-1] for c in services["jaeger"]["command"]} == {"4317", "4318"}
    # One scheduler, two supervisors, agents multiplied by --scale (no fixed name or port).
    assert services["scheduler"].get("deploy", {}).get("replicas", 1) == 1
    assert services["supervisor"]["deploy"]["replicas"] == 2
    agent = services["agent"]
    assert "container_name" not in agent and "ports" not in agent
    assert "replicas" not in agent.get("deploy", {})
    assert services["cli"]["profiles"] == ["tools"]
    # Published ports listen on the loopback interface only.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_healthchecks_and_start_order(services):
    for name in ("rabbitmq", "redis", *FLEET):
        assert services[name]["healthcheck"]["test"], name
    for name in (*FLEET, "cli"):
        depends = services[name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["jaeger"]["condition"] in ("service_started", "service_healthy")


def test_fleet_commands_are_real_commands(services):
    for name in (*FLEET, "cli"):
        argv = services[name]["command"]
        assert isinstance(argv, list), f"{name}: exec form, so SIGTERM reaches the process"
        if argv == ["--help"]:
            continue
        ctx = assert_cli_accepts(argv, f"compose {name}")
        assert service_of(argv) == name
        if name == "agent":
            assert_task_module(ctx.params["module"], "compose agent")
            grace = ctx.params["grace"]
            stop = services["agent"]["stop_grace_period"]
            assert stop.endswith("s") and float(stop[:-1]) > grace, "room to drain"


def test_fleet_health_probes_use_the_served_port_and_path(services):
    for name in FLEET:
        env = services[name]["environment"]
        port = env["SASFLEET_METRICS_PORT"]
        probe = " ".join(services[name]["healthcheck"]["test"])
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
        assert url, probe
        assert url.group(1) == port, f"{name}: probe port is SASFLEET_METRICS_PORT"
        assert served(url.group(2)), f"{name}: {url.group(2)} is not served by the services"


def test_environment_variables_exist_in_the_code(services):
    for name in (*FLEET, "cli"):
        env = services[name]["environment"]
        assert_known_env(env, f"compose {name}")
        # The fleet's definitions and ACLs are for the default prefix.
        assert env["SASFLEET_PREFIX"] == Settings.model_fields["prefix"].default
        # OTLP over HTTP (the exporter's default protocol) to Jaeger's 4318.
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_each_service_connects_as_its_own_user_with_a_password_from_the_env_file(services):
    definitions = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    amqp_users = {u["name"] for u in definitions["users"]}
    redis_users = set(re.findall(r"^user (\S+)", REDIS_ACL.read_text(), flags=re.MULTILINE))
    expected_user = {"scheduler": "scheduler", "supervisor": "supervisor", "agent": "agent"}
    expected_user["cli"] = "client"
    for name, user in expected_user.items():
        env = services[name]["environment"]
        for key, users, scheme, var_prefix in (
            ("SASFLEET_AMQP_URL", amqp_users, "amqp", "AMQP"),
            ("SASFLEET_REDIS_URL", redis_users, "redis", "REDIS"),
        ):
            url = urlsplit(substituted(env[key]))
            assert url.scheme == scheme and url.username == user and user in users, (name, key)
            # The password is an interpolation of the env file's variable, never a literal.
            (var,) = INTERPOLATION.findall(env[key])
            assert var == f"{var_prefix}_{user.upper()}_PASSWORD", (name, key)


def test_every_interpolated_variable_is_in_the_env_example(compose):
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(INTERPOLATION.findall(text))
    defined = env_example()
    assert used - {"FLEET_IMAGE"} <= set(defined), used - set(defined)
    assert "FLEET_IMAGE" in ENV_EXAMPLE.read_text(encoding="utf-8")
    # Every password is a placeholder that `make up` (deploy/new-env.sh) replaces.
    assert {v for k, v in defined.items() if k.endswith("_PASSWORD")} == {"change-me"}


def test_rendered_templates_get_every_variable_they_name(services):
    for name, template, out_flag in (
        ("rabbitmq", DEFINITIONS, None),
        ("redis", REDIS_ACL, "--aclfile"),
    ):
        service = services[name]
        entrypoint = service["entrypoint"]
        assert entrypoint[:2] == ["sh", "/etc/sasfleet/render.sh"]
        source, output = entrypoint[2], entrypoint[3]
        mounts = dict(v.split(":")[:2][::-1] for v in service["volumes"])
        assert (DEPLOY / mounts[source]).resolve() == template.resolve()
        assert (DEPLOY / mounts["/etc/sasfleet/render.sh"]).is_file()
        assert entrypoint[entrypoint.index("--") + 1] == "docker-entrypoint.sh"
        assert set(service["environment"]) == template_vars(template), name
        if out_flag:
            command = service["command"]
            assert command[command.index(out_flag) + 1] == output
        else:
            conf_mount = next(v for v in service["volumes"] if "rabbitmq.conf" in v)
            conf = (DEPLOY / conf_mount.split(":")[0]).read_text(encoding="utf-8")
            assert re.search(rf"^load_definitions = {re.escape(output)}$", conf, re.MULTILINE)
            assert conf_mount.split(":")[1].startswith("/etc/rabbitmq/conf.d/")


def test_no_credentials_in_the_compose_file():
    text = COMPOSE.read_text(encoding="utf-8")
    for url in re.findall(r"\b(?:amqp|redis)://[^\s\"']+", substituted(text)):
        assert urlsplit(url).password in (None, "INTERPOLATED"), url
    assert "guest" not in text


def test_build_context_and_dockerfile_exist(services):
    build = services["scheduler"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / build["dockerfile"]).is_file()
    assert (context / "pyproject.toml").is_file()


def test_services_only_file_is_what_make_services_starts():
    services = load(SERVICES_ONLY)["services"]
    assert set(services) == {"rabbitmq", "redis"}
    assert "127.0.0.1:5672:5672" in services["rabbitmq"]["ports"]
    assert "127.0.0.1:6379:6379" in services["redis"]["ports"]
    script = (DEPLOY / "services.sh").read_text(encoding="utf-8")
    assert 'COMPOSE_FILE="${SCRIPT_DIR}/compose.services.yaml"' in script


def test_make_up_and_down_drive_this_compose_file():
    def dry_run(*targets: str) -> str:
        done = subprocess.run(
            ["make", "-n", "--no-print-directory", *targets],
            cwd=DEPLOY.parent,
            # Under `make test` the parent make's flags would leak in ("Entering directory").
            env={
                k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    up = dry_run("up", "AGENTS=5").splitlines()
    assert up[0] == "sh deploy/new-env.sh"
    assert up[1] == "docker compose -f deploy/compose.yaml up -d --build --scale agent=5"
    assert dry_run("down").strip() == "docker compose -f deploy/compose.yaml down"
    listed = subprocess.run(
        ["make", "help"], cwd=DEPLOY.parent, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert re.search(r"^\s+up\s+\S", listed, re.MULTILINE)
    assert re.search(r"^\s+down\s+\S", listed, re.MULTILINE)
