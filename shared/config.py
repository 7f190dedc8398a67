"""Configuration: one settings object read from ``SASFLEET_*`` environment variables.

Nothing reads the environment at import time: call :func:`load_settings` (the CLI does,
then applies its flags on top with :meth:`Settings.model_copy`).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sasfleet.shared.errors import ConfigError
from sasfleet.shared.messages.submit import StepOptions
from sasfleet.shared.statemachine import RetryPolicy

ENV_PREFIX = "SASFLEET_"


class Settings(BaseSettings):
    """Every knob of the fleet. Environment variable = ``SASFLEET_`` + upper-case name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"), description="RabbitMQ URL."
    )
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL.")
    redis_cluster: bool = Field(
        False,
        description="Redis is a Redis Cluster; the URL names one of its nodes (the client "
        "discovers the others).",
    )
    prefix: str = Field(
        "sasfleet", description="Prefix of every queue, exchange and Redis key of this fleet."
    )
    max_payload_bytes: int = Field(
        1_048_576, gt=0, description="Largest accepted message body or result, in bytes."
    )
    default_pool: str = Field("default", description="Agent pool for steps that name none.")
    max_attempts: int = Field(3, ge=1, description="Default attempts per step.")
    step_timeout_s: float = Field(
        300.0, gt=0, description="Default start-to-close timeout of one attempt, seconds."
    )
    dispatch_timeout_s: float = Field(
        300.0,
        gt=0,
        description="How long a dispatched step may wait unclaimed before it is re-dispatched.",
    )
    lease_s: float = Field(
        10.0,
        gt=0,
        description="Lease of a running step; the agent renews it every third of it, or every "
        "heartbeat when that is sooner.",
    )
    retry_initial_s: float = Field(0.5, ge=0, description="First retry delay after a failure.")
    retry_backoff: float = Field(2.0, ge=1, description="Retry delay multiplier per attempt.")
    retry_max_s: float = Field(30.0, ge=0, description="Longest retry delay.")
    advance_grace_s: float = Field(
        5.0,
        gt=0,
        description="How long a recorded outcome may wait for the scheduler before the "
        "supervisor re-announces it.",
    )
    heartbeat_s: float = Field(2.0, gt=0, description="Agent heartbeat interval.")
    amqp_heartbeat_s: int = Field(
        2,
        ge=1,
        description="AMQP heartbeat of agents: a frozen agent's prefetched deliveries go back "
        "to the queue after about two of them (keep it under a third of agent_timeout_s, so "
        "they are back before its steps are re-dispatched).",
    )
    agent_timeout_s: float = Field(
        6.0,
        gt=0,
        description="An agent silent this long is dead or hung: supervisors recover its steps.",
    )
    supervisor_tick_s: float = Field(
        0.25,
        gt=0,
        description="Supervisor scan interval (deadlines, and agents whose connections closed).",
    )
    timer_tick_s: float = Field(0.1, gt=0, description="Scheduler timer scan interval.")
    escalation_webhook: str = Field(
        "", description="URL the supervisor POSTs escalated jobs to (empty: none)."
    )
    scan_batch: int = Field(200, gt=0, description="Overdue entries the supervisor takes a tick.")
    scheduler_prefetch: int = Field(256, gt=0, description="Unacked messages per scheduler queue.")
    job_ttl_s: int = Field(
        7 * 24 * 3600, gt=0, description="How long finished jobs stay in Redis, seconds."
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of a service's /metrics, /healthz and /readyz (0: not served).",
    )
    metrics_host: str = Field(
        "0.0.0.0", description="Address the metrics and health endpoints listen on."
    )
    metrics_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often a service probes Redis and RabbitMQ for /readyz and samples "
        "gauges (queue depths, live agents).",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if not value or any(c in value for c in "{}: \t\n"):
            raise ValueError("prefix must be non-empty without braces, colons or spaces")
        return value

    def retry_policy(self) -> RetryPolicy:
        """The fleet's retry policy: what a step and its task leave open."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial_ms=int(self.retry_initial_s * 1000),
            coefficient=self.retry_backoff,
            max_ms=int(self.retry_max_s * 1000),
        )

    def step_defaults(self) -> StepOptions:
        """The fleet's step options: what a step leaves open (its retry policy aside)."""
        return StepOptions(
            pool=self.default_pool,
            timeout_s=self.step_timeout_s,
            schedule_to_start_s=self.dispatch_timeout_s,
        )

    def redacted(self) -> dict[str, Any]:
        """The effective settings with secrets masked, for logs and `config show`."""
        return {
            name: (mask_url(value.get_secret_value()) if isinstance(value, SecretStr) else value)
            for name, value in self.model_dump().items()
        }


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host_and_port = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host_and_port}"))


_CREDENTIALS_IN_URL = re.compile(r"(\w+://[^:/@\s]*:)[^@/\s]+@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (for logs)."""
    return _CREDENTIALS_IN_URL.sub(r"\1***@", text)


def _from_files() -> dict[str, str]:
    """``SASFLEET_<NAME>_FILE`` names a file holding the value (Docker/Kubernetes secrets)."""
    values = {}
    for name in Settings.model_fields:
        path = os.environ.get(f"{ENV_PREFIX}{name.upper()}_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    values[name] = fh.read().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {ENV_PREFIX}{name.upper()}_FILE: {exc}") from exc
    return values


def load_settings(**overrides: Any) -> Settings:
    """Read the environment now (values from ``*_FILE`` files win over plain variables) and
    apply explicit overrides (flags) on top."""
    values: dict[str, Any] = _from_files()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
