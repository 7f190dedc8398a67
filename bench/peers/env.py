"""What a peer's worker process needs to know about its run, passed in the environment
(the worker apps are imported by each library's own CLI, which takes no such options)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.model import RunSpec


@dataclass(frozen=True)
class PeerEnv:
    """Broker, Redis and names of one run."""

    prefix: str
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_type: str = "quorum"

    @property
    def queue(self) -> str:
        """The run's one work queue."""
        return f"{self.prefix}.jobs"

    @property
    def done_channel(self) -> str:
        """Redis pub/sub channel on which a worker announces a stored result."""
        return f"{self.prefix}:done"

    @property
    def key_prefix(self) -> str:
        """Every Redis key of the run starts with this."""
        return f"{self.prefix}:"

    @classmethod
    def of(cls, spec: RunSpec) -> PeerEnv:
        return cls(spec.prefix, spec.amqp_url, spec.redis_url, spec.queue_type)

    def environ(self) -> dict[str, str]:
        return {
            "BENCH_PREFIX": self.prefix,
            "BENCH_AMQP_URL": self.amqp_url,
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_QUEUE_TYPE": self.queue_type,
        }

    @classmethod
    def from_environ(cls) -> PeerEnv:
        """The run a worker process belongs to (defaults when imported outside a run)."""
        return cls(
            os.environ.get("BENCH_PREFIX", "bench-unset"),
            os.environ.get("BENCH_AMQP_URL", cls.amqp_url),
            os.environ.get("BENCH_REDIS_URL", cls.redis_url),
            os.environ.get("BENCH_QUEUE_TYPE", cls.queue_type),
        )


def payload(n: int) -> dict[str, object]:
    """Job ``n``'s small JSON payload (the same on every system)."""
    return {"n": n, "pad": "x" * 64}
