"""What the orchestrator hands a child run (:class:`RunSpec`) and what it gets back
(:class:`Measurement`); both travel as JSON between processes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

Phase = Literal["e2e", "drain", "load", "multistep"]
PHASES: tuple[Phase, ...] = get_args(Phase)

# Every system `--systems` accepts, in table order; "raw" is the aio-pika round trip.
SYSTEMS = ("sasfleet", "sasfleet-1by1", "celery", "celery-threads", "dramatiq", "taskiq", "raw")
PEERS = ("celery", "celery-threads", "dramatiq", "taskiq")
RESULT_MARK = "BENCH-RESULT "


@dataclass(frozen=True)
class RunSpec:
    """One system through one phase, once."""

    system: str
    phase: Phase
    round: int
    jobs: int
    steps: int
    prefix: str  # unique per run: queue names and Redis keys start with it
    amqp_url: str
    redis_url: str
    workdir: str  # worker logs go here
    queue_type: str = "quorum"  # of the peers' and the raw run's queues
    in_flight: int = 512  # asyncio producers: submissions awaiting their confirm at once
    producer_threads: int = 16  # blocking producers: one confirm in flight per thread
    agents: int = 2
    concurrency: int = 32
    rate: float = 0.0  # load phase: offered jobs/s
    warmup: int = 100
    stall_timeout_s: float = 120.0  # give up when no job ends for this long

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


@dataclass
class Measurement:
    """What one run measured. Times in seconds, latencies in milliseconds."""

    system: str
    phase: Phase
    round: int
    submitted: int
    completed: int  # verified in the result store: succeeded with the right result
    elapsed_s: float  # first submit (drain: worker start) to last completion seen
    throughput: float  # completed jobs / elapsed_s
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # by process kind, over the run
    startup_s: float = 0.0  # drain: worker start to the first completion
    offered_rate: float = 0.0  # load: submissions / submitting time actually achieved
    max_lag_ms: float = 0.0  # load: latest submission start behind its schedule
    error: str = ""

    @property
    def lost(self) -> int:
        return self.submitted - self.completed

    def cpu_per_1k(self) -> dict[str, float]:
        """CPU seconds per 1,000 completed jobs, by process kind."""
        if not self.completed:
            return {}
        return {k: v * 1000 / self.completed for k, v in self.cpu_s.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    @classmethod
    def failed(cls, spec: RunSpec, error: str) -> Measurement:
        """A run that produced no figures (the child crashed or timed out)."""
        return cls(spec.system, spec.phase, spec.round, spec.jobs, 0, 0.0, 0.0, error=error)
