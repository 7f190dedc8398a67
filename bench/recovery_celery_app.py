"""The Celery app the recovery benchmark's workers run (``celery -A bench.recovery_celery_app``).

Configured from the environment the benchmark sets (see ``bench.recovery_celery``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import signals  # type: ignore[import-untyped]

from bench.recovery_celery import (
    ENV_BACKEND,
    ENV_BROKER,
    ENV_NS,
    TASK,
    make_app,
    ready_key,
    starts_key,
)

NS = os.environ[ENV_NS]
app = make_app(NS, os.environ[ENV_BROKER], os.environ[ENV_BACKEND])
_redis: redis.Redis | None = None


def _probe() -> redis.Redis:
    # One client per process, made lazily: pool processes are forked from the main one.
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ[ENV_BACKEND], decode_responses=True)
    return _redis


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def sleep(seconds: float) -> float:
    """Record this attempt's start (ms, pid), then sleep ``seconds``."""
    _probe().rpush(starts_key(NS, str(sleep_task.request.id)), f"{_now_ms()} {os.getpid()}")
    time.sleep(seconds)
    return seconds


sleep_task = app.task(name=TASK)(sleep)


def _on_ready(sender: Any = None, **_: Any) -> None:
    name = str(sender.hostname).partition("@")[0]
    _probe().set(ready_key(NS, name), _now_ms())


signals.worker_ready.connect(_on_ready, weak=False)
