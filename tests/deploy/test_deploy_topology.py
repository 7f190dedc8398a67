"""The production topology and users, structurally: deploy/rabbitmq/definitions.json against
shared/amqp/topology.py (names, quorum arguments, bindings) with a permission matrix of what
each service's code does; deploy/redis/users.acl against the Lua scripts each service runs;
deploy/render.sh and deploy/new-env.sh. test_deploy_credentials.py runs them for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    AMQP_USERS,
    DEFINITIONS,
    DEPLOY,
    ENV_EXAMPLE,
    REDIS_ACL,
    REDIS_USERS,
    amqp_password_var,
    placeholder,
    redis_password_var,
    render,
)

from sasfleet.shared.amqp.topology import Names, queue_arguments
from sasfleet.shared.config import Settings
from sasfleet.shared.state.keys import Keys
from sasfleet.shared.state.scripts import SCRIPT_NAMES

PREFIX = Settings.model_fields["prefix"].default
N = Names(PREFIX)
LUA = Path(__file__).resolve().parents[2] / "shared" / "state" / "lua"
SERVICES = ("scheduler", "supervisor", "agent", "client")


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return data


# --------------------------------------------------------------------------- RabbitMQ


def test_definitions_declare_the_topology_of_topology_py(definitions):
    exchanges = {(e["name"], e["type"], e["durable"]) for e in definitions["exchanges"]}
    assert exchanges == {(N.exchange, "direct", True), (N.dead_exchange, "fanout", True)}
    queues = {q["name"]: q for q in definitions["queues"]}
    work = {N.submit, N.events, N.pool("default"), N.pool("default", "high")}
    assert set(queues) == work | {N.dead}
    for name in work:
        # Exactly the arguments the services declare: a mismatch would make their declare
        # fail with PRECONDITION_FAILED.
        assert queues[name]["arguments"] == queue_arguments(N), name
        assert queues[name]["durable"] and not queues[name]["auto_delete"]
    assert queues[N.dead]["arguments"] == {"x-queue-type": "quorum"}
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]}
    assert bindings == {(N.exchange, q, q) for q in work} | {(N.dead_exchange, N.dead, N.dead)}
    assert {e["vhost"] for e in [*definitions["exchanges"], *definitions["queues"]]} == {"/"}


def test_one_user_per_role_with_a_password_from_the_environment(definitions):
    users = {u["name"]: u for u in definitions["users"]}
    assert set(users) == set(AMQP_USERS)
    for name, user in users.items():
        assert user["password"] == placeholder(amqp_password_var(name)), name
        assert "password_hash" not in user
        assert user["tags"] == (["administrator"] if name == "admin" else []), name
    assert {p["user"] for p in definitions["permissions"]} == set(AMQP_USERS)
    assert {p["vhost"] for p in definitions["permissions"]} == {"/"}


def allowed(definitions: dict[str, Any], user: str, operation: str, name: str) -> bool:
    """Whether RabbitMQ lets ``user`` do ``operation`` on a resource called ``name`` (the
    permissions are regular expressions over exchange and queue names)."""
    (perm,) = [p for p in definitions["permissions"] if p["user"] == user]
    return re.search(perm[operation], name) is not None


POOLS = (N.pool("default"), N.pool("default", "high"), N.pool("payments"), N.pool("p", "high"))
CORE = (N.exchange, N.dead_exchange, N.dead, N.submit, N.events)
REPLY_QUEUES = ("amq.gen-JzTY20BRgKO-HjmUJj0wLg", "amq_" + "0123456789abcdef" * 2)

# What each role's code does on the broker, as (operation, names). Every service and the
# client open a FleetChannel, whose Topology.declare() declares the exchanges, the dead-letter
# queue and the submit and events queues (configure), binds them (write on the queue, read on
# the exchange), and declares the work queues with their dead-letter exchange (write on it,
# read on the queue).
DECLARE_CORE = [
    ("configure", CORE),
    ("write", CORE[1:]),
    ("read", (N.exchange, N.dead_exchange, N.submit, N.events)),
]
NEEDS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    # Consumes submit and events; publishes dispatches (fleet exchange, declaring the pool
    # queue on first use), dead letters (dlx) and replies (the default exchange).
    "scheduler": [
        *DECLARE_CORE,
        ("configure", POOLS),
        ("write", (*POOLS, "amq.default")),
        ("read", POOLS),
    ],
    # Declares and consumes its pool's queues; publishes events, dead letters, and (on
    # shutdown) the steps it hands back.
    "agent": [*DECLARE_CORE, ("configure", POOLS), ("write", POOLS), ("read", POOLS)],
    # Publishes what follows a step it failed at a deadline or an outcome no one took up
    # (a compensation's or the next step's dispatch, declaring the pool queue), and
    # dispatches handed out again (republish).
    "supervisor": [*DECLARE_CORE, ("configure", POOLS), ("write", POOLS), ("read", POOLS)],
    # Publishes submissions and cancellation events; declares and consumes its private reply
    # queue (named by the server, amq.gen-*, or by aio-pika's robust channel, amq_<hex>).
    "client": [*DECLARE_CORE, ("configure", REPLY_QUEUES), ("read", REPLY_QUEUES)],
    "keda": [],
    "admin": [],
}
# And what each may not do: nothing outside the fleet's names, no reading the dead-letter
# queue (operators, as admin), no publishing through the default exchange but the
# scheduler's replies, no taking work or declaring pool queues as a client, nothing for KEDA
# (its passive declare needs no permission).
OTHERS = (
    "other",
    "other.submit",
    f"{PREFIX}x",
    f"{PREFIX}x.submit",
    f"x{PREFIX}.submit",
    "amq.direct",
)
DENIED: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "scheduler": [(op, OTHERS) for op in ("configure", "write", "read")] + [("read", (N.dead,))],
    "agent": [(op, OTHERS) for op in ("configure", "write", "read")]
    + [("read", (N.dead,)), ("write", ("amq.default",))],
    "supervisor": [(op, OTHERS) for op in ("configure", "write", "read")]
    + [("read", (N.dead,)), ("write", ("amq.default",))],
    "client": [(op, OTHERS) for op in ("configure", "write", "read")]
    + [("read", (N.dead, *POOLS)), ("configure", POOLS), ("write", ("amq.default", *POOLS))],
    "keda": [(op, (*CORE, *POOLS, *OTHERS)) for op in ("configure", "write", "read")],
}


@pytest.mark.parametrize("user", sorted(NEEDS))
def test_permissions_allow_what_the_code_does(definitions, user):
    for operation, names in NEEDS[user]:
        for name in names:
            assert allowed(definitions, user, operation, name), (user, operation, name)
    if user == "admin":
        assert all(
            allowed(definitions, "admin", op, n)
            for op in ("configure", "write", "read")
            for n in OTHERS
        )


@pytest.mark.parametrize("user", sorted(DENIED))
def test_permissions_refuse_everything_else(definitions, user):
    for operation, names in DENIED[user]:
        for name in names:
            assert not allowed(definitions, user, operation, name), (user, operation, name)


# --------------------------------------------------------------------------- Redis


def acl_users() -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for line in REDIS_ACL.read_text(encoding="utf-8").splitlines():
        assert line.startswith("user "), f"ACL files allow `user` lines only: {line!r}"
        _, name, *rules = line.split()
        users[name] = rules
    return users


def script_commands(name: str) -> set[str]:
    text = (LUA / f"{name}.lua").read_text(encoding="utf-8")
    return {c.lower() for c in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", text)}


# Which Lua scripts each role runs (StateStore and Schedules methods its code calls). A new
# script must be given to a role here, and its commands to that role's ACL user.
SCRIPTS = {
    "scheduler": {"create_job", "fail_submission", "advance", "fire_timer", "claim_due"},
    "agent": {"claim", "renew", "record", "release", "settle"},
    "supervisor": {"recover", "expire_agent", "claim_due"},
    "client": {"cancel"},
}


def test_acl_users_and_their_confinement():
    users = acl_users()
    assert set(users) == {"default", *REDIS_USERS}
    assert users["default"] == ["on", "nopass", "resetkeys", "resetchannels", "-@all", "+ping"]
    assert users["admin"][1] == ">" + placeholder(redis_password_var("admin"))
    for name in SERVICES:
        rules = users[name]
        assert rules[:2] == ["on", ">" + placeholder(redis_password_var(name))], name
        assert "resetkeys" in rules and "resetchannels" in rules, name
        keys = [r for r in rules if r.startswith(("~", "%", "allkeys"))]
        assert keys == [f"~{Keys(PREFIX).pattern()}"], name
        # Pub/sub only on the fleet's job-notification channels.
        channels = [r for r in rules if r.startswith("&") or r == "allchannels"]
        assert channels == [f"&{Keys(PREFIX).notify_prefix}*"], name
        grants = rules[rules.index("-@all") :]
        assert grants[:4] == ["-@all", "+@connection", "-@admin", "-@dangerous"], name
        assert not {"+@all", "+eval", "+@scripting", "+keys", "+flushall"} & set(grants), name
        assert {"+evalsha", "+script|load"} <= set(grants), name


def test_scripts_are_each_run_by_some_role():
    assert set().union(*SCRIPTS.values()) == set(SCRIPT_NAMES)


@pytest.mark.parametrize("role", SERVICES)
def test_acl_grants_every_command_of_the_scripts_a_role_runs(role):
    """Redis checks every command a script runs against the calling user."""
    granted = {r[1:] for r in acl_users()[role] if r.startswith("+") and not r.startswith("+@")}
    needed = set().union(*(script_commands(s) for s in SCRIPTS[role])) | script_commands("_lib")
    assert needed <= granted, f"{role} lacks {sorted(needed - granted)}"


# --------------------------------------------------------------------------- render, env


def test_render_fills_every_placeholder_into_a_private_file(tmp_path, passwords):
    for template in (DEFINITIONS, REDIS_ACL):
        out = tmp_path / template.name
        done = render(template, out, passwords)
        assert done.returncode == 0, done.stderr
        text = out.read_text(encoding="utf-8")
        assert "${" not in text
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        for var in re.findall(r"\$\{([A-Z0-9_]+)\}", template.read_text(encoding="utf-8")):
            assert passwords[var] in text
    json.loads((tmp_path / DEFINITIONS.name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is not set"),
        ("change-me", "still change-me"),
        ("pa/ss", "may only hold"),
        ("p@ss", "may only hold"),
    ],
)
def test_render_refuses_missing_placeholder_and_unsafe_values(tmp_path, passwords, value, why):
    env = dict(passwords)
    env["AMQP_AGENT_PASSWORD"] = value
    done = render(DEFINITIONS, tmp_path / "out.json", env)
    assert done.returncode != 0
    assert "AMQP_AGENT_PASSWORD" in done.stderr and why in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_new_env_writes_random_passwords_once(tmp_path):
    shutil.copy(DEPLOY / "new-env.sh", tmp_path / "new-env.sh")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env.example")
    run = ["sh", str(tmp_path / "new-env.sh")]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    assert (
        subprocess.run(run, env=env, check=False, capture_output=True, timeout=30).returncode == 0
    )
    written = (tmp_path / ".env").read_text(encoding="utf-8")
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1) for line in written.splitlines() if line and not line.startswith("#")
    )
    expected = {amqp_password_var(u) for u in AMQP_USERS} | {
        redis_password_var(u) for u in REDIS_USERS
    }
    assert set(values) == expected
    assert len(set(values.values())) == len(values)
    assert all(re.fullmatch(r"[0-9a-f]{36}", v) for v in values.values())
    # A second run leaves the file (and its passwords) alone.
    assert (
        subprocess.run(run, env=env, check=False, capture_output=True, timeout=30).returncode == 0
    )
    assert (tmp_path / ".env").read_text(encoding="utf-8") == written


def test_render_then_runs_the_command_with_the_callers_umask(tmp_path, passwords):
    out = tmp_path / "users.acl"
    in_umask_022 = ["sh", "-c", 'umask 022; exec sh "$0" "$@"']
    then = ["--", "sh", "-c", 'umask; test -s "$0"', str(out)]
    done = subprocess.run(
        [*in_umask_022, str(DEPLOY / "render.sh"), str(REDIS_ACL), str(out), *then],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **passwords},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0022"
