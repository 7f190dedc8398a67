"""Key names, identifiers and settings: the pure functions every service derives names from."""

from __future__ import annotations

import os

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from redis.crc import key_slot

from sasfleet.shared.config import ENV_PREFIX, Settings, load_settings, mask_url
from sasfleet.shared.ids import (
    MAX_JOB_ID_LENGTH,
    instance_id,
    is_valid_job_id,
    job_id_for_key,
    new_job_id,
    submitted_job_id,
)
from sasfleet.shared.state.keys import Keys, deadline_member, parse_deadline_member

K = Keys("fleet1")
JOB = "job-42"
JOB_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
job_ids = st.text(alphabet=JOB_ID_CHARS, min_size=1, max_size=MAX_JOB_ID_LENGTH)


def per_job_keys(keys: Keys, job_id: str) -> list[str]:
    return [
        keys.job(job_id),
        keys.history(job_id),
        keys.step(job_id, 0),
        keys.step(job_id, 17),
        keys.step_prefix(job_id),
    ]


# --- keys -----------------------------------------------------------------------------------


def test_key_formats() -> None:
    b = K.bucket_of(JOB)
    assert K.job(JOB) == f"fleet1:{{b{b}}}:job:job-42"
    assert K.step(JOB, 3) == f"fleet1:{{b{b}}}:step:job-42:3"
    assert K.step_prefix(JOB) + "3" == K.step(JOB, 3)
    assert K.history(JOB) == f"fleet1:{{b{b}}}:history:job-42"
    assert K.deadlines(b) == f"fleet1:{{b{b}}}:deadlines"
    assert K.agent_steps("a-1", b) == f"fleet1:{{b{b}}}:agent-steps:a-1"
    before, after = K.step_key_format(b)
    assert before + JOB + after + "3" == K.step(JOB, 3)
    assert (K.agents, K.agent("a-1")) == ("fleet1:{agents}:agents", "fleet1:{agents}:agent:a-1")
    assert (K.schedules, K.cron) == ("fleet1:{cron}:schedules", "fleet1:{cron}:cron")
    assert K.pattern() == "fleet1:*"


def test_jobs_spread_over_every_bucket() -> None:
    seen = {K.bucket_of(f"job-{i}") for i in range(2000)}
    assert seen == set(K.buckets)


@given(job_ids, st.text(alphabet=JOB_ID_CHARS, min_size=1, max_size=20))
def test_every_key_a_job_script_touches_is_in_one_cluster_slot(job_id: str, agent: str) -> None:
    """Redis Cluster runs a script only when all its keys hash to one slot: a job's own
    keys and its bucket's indexes share the hash tag ``{b<N>}``."""
    b = K.bucket_of(job_id)
    keys = [
        *per_job_keys(K, job_id),
        K.cancel_marker(job_id),
        K.deadlines(b),
        K.timers(b),
        K.jobs(b),
        K.escalations(b),
        K.agent_steps(agent, b),
    ]
    assert {key_slot(k.encode()) for k in keys} == {key_slot(f"b{b}".encode())}


def test_fleet_wide_keys_used_together_share_a_slot() -> None:
    assert key_slot(K.agents.encode()) == key_slot(K.agent("x").encode())
    assert key_slot(K.schedules.encode()) == key_slot(K.cron.encode())


def test_every_key_lives_under_the_fleet_prefix_so_fleets_do_not_collide() -> None:
    a, b = Keys("a"), Keys("ab")
    for keys in (a, b):
        names = [
            *per_job_keys(keys, JOB),
            keys.deadlines(0),
            keys.jobs(0),
            keys.agents,
            keys.agent("x"),
            keys.schedules,
        ]
        assert all(n.startswith(keys.prefix + ":") for n in names)
    assert not a.job(JOB).startswith(b.prefix + ":")


@given(st.text(min_size=0, max_size=50), st.integers(min_value=0, max_value=10**6))
def test_deadline_member_round_trips(job_id: str, step: int) -> None:
    member = deadline_member(job_id, step)
    assert member == f"{job_id}|{step}"
    assert parse_deadline_member(member) == (job_id, step)


# --- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "job-42", "k:v.1_x", "x" * MAX_JOB_ID_LENGTH])
def test_valid_job_ids(value: str) -> None:
    assert is_valid_job_id(value) is True


@pytest.mark.parametrize(
    "value", ["", "x" * (MAX_JOB_ID_LENGTH + 1), "a{b", "a}b", "a b", "a|b", "abc\n", "é"]
)
def test_invalid_job_ids(value: str) -> None:
    assert is_valid_job_id(value) is False


def test_new_job_ids_are_fresh_valid_hex() -> None:
    a, b = new_job_id(), new_job_id()
    assert a != b and len(a) == 32 and int(a, 16) >= 0
    assert is_valid_job_id(a)


def test_job_id_for_key_is_deterministic_distinct_and_valid() -> None:
    first = job_id_for_key("order-7")
    assert first == job_id_for_key("order-7")
    # Pinned: clients that re-submit with the same key must learn the same id across releases.
    assert first == "ke55ae928d7dc5313b2507574df655d05"
    assert first != job_id_for_key("order-8")
    assert is_valid_job_id(first)


@given(st.text(min_size=1, max_size=256))
def test_any_idempotency_key_maps_to_a_valid_job_id(key: str) -> None:
    assert is_valid_job_id(job_id_for_key(key))


def test_a_submitted_job_gets_the_id_it_names_else_its_keys_else_the_message_id() -> None:
    assert submitted_job_id("mine", "k", "m-1") == "mine"
    assert submitted_job_id(None, "order-7", "m-1") == job_id_for_key("order-7")
    assert submitted_job_id(None, None, "m-1") == "m-1"
    assert submitted_job_id(None, None, "m-1", 3) == "m-1.3"  # job 3 of a batch
    fresh = submitted_job_id(None, None, None)
    assert fresh is not None and is_valid_job_id(fresh) and fresh != submitted_job_id(None, None)
    assert submitted_job_id(None, None, "not {valid}") is None
    assert submitted_job_id(None, None, "x" * 128, 1) is None  # too long with its index


def test_instance_id_names_the_role_and_is_unique() -> None:
    a, b = instance_id("agent"), instance_id("agent")
    assert a.startswith("agent-") and a != b


# --- settings -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.prefix == "sasfleet"
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert s.amqp_url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert (s.max_attempts, s.default_pool, s.max_payload_bytes) == (3, "default", 1_048_576)
    assert (s.retry_initial_s, s.retry_backoff, s.retry_max_s) == (0.5, 2.0, 30.0)
    assert s.job_ttl_s == 7 * 24 * 3600


def test_settings_read_sasfleet_environment_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SASFLEET_PREFIX", "blue")
    clean_env.setenv("SASFLEET_MAX_ATTEMPTS", "7")
    clean_env.setenv("SASFLEET_LEASE_S", "2.5")
    clean_env.setenv("SASFLEET_REDIS_URL", "redis://r:6380/1")
    clean_env.setenv("MAX_ATTEMPTS", "99")  # no prefix: not ours
    s = load_settings()
    assert (s.prefix, s.max_attempts, s.lease_s) == ("blue", 7, 2.5)
    assert s.redis_url.get_secret_value() == "redis://r:6380/1"


def test_environment_is_read_when_loading_not_at_import(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().prefix == "sasfleet"
    clean_env.setenv("SASFLEET_PREFIX", "later")
    assert load_settings().prefix == "later"


def test_explicit_overrides_beat_the_environment_and_none_means_unset(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SASFLEET_PREFIX", "env")
    assert load_settings(prefix="flag").prefix == "flag"
    assert load_settings(prefix=None).prefix == "env"


@pytest.mark.parametrize("prefix", ["", "a:b", "a{b}", "a b", "tab\t"])
def test_invalid_prefix_is_rejected(clean_env: pytest.MonkeyPatch, prefix: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="prefix"):
        load_settings(prefix=prefix)
    clean_env.setenv("SASFLEET_PREFIX", prefix or ":")
    with pytest.raises(pydantic.ValidationError, match="prefix"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_attempts", 0), ("lease_s", 0), ("retry_backoff", 0.5), ("scan_batch", 0)],
)
def test_out_of_range_settings_are_rejected(name: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError, match=name):
        Settings(**{name: value})


def test_redacted_masks_url_passwords_and_keeps_the_rest(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings(redis_url=SecretStr("redis://app:s3cret@redis.internal:6379/2"))
    shown = s.redacted()
    assert shown["redis_url"] == "redis://app:***@redis.internal:6379/2"
    assert shown["amqp_url"] == "amqp://guest:***@127.0.0.1:5672/"
    assert shown["prefix"] == "sasfleet" and shown["max_attempts"] == 3
    assert "s3cret" not in repr(shown)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://u:p%40ss@rabbit/vhost", "amqp://u:***@rabbit/vhost"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://user@h", "redis://user@h"),
        ("rediss://u:pw@h?ssl_cert_reqs=none", "rediss://u:***@h?ssl_cert_reqs=none"),
    ],
)
def test_mask_url_replaces_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_keeps_ipv6_hosts_intact() -> None:
    assert mask_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
