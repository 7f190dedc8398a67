"""Prometheus metrics of the fleet, served by each service on ``/metrics`` (see health.py).

The metrics live in a registry of their own (not the client library's global one), so an
application that embeds the Python client does not find the fleet's series in its own
``/metrics``. Names follow the Prometheus conventions: a ``sasfleet_`` namespace,
``_total`` counters, base units (``_seconds``), and low-cardinality labels only (task,
pool, queue, kind; never a job id).

Which service exports what: the scheduler counts jobs (submitted, finished by status),
retries, compensations and queue depths; agents count the jobs they end (a last step's
success ends its job in the agent: sum ``jobs_finished_total`` over both), attempts, step
durations and queue waits per task, stale results and agent-side timeouts; supervisors
count recoveries by kind, lost agents and live agents per pool. Every service exports dead
letters, deliveries by outcome, and its Redis/AMQP connection state.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from sasfleet.shared.statemachine import Failure

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_NS = "sasfleet"
# Step durations and queue waits: from a millisecond echo to a step of several minutes.
_DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)

# ---------------------------------------------------------------- jobs (scheduler)
JOBS_SUBMITTED = Counter(
    "jobs_submitted",
    "Jobs accepted and recorded (duplicates not counted).",
    namespace=_NS,
    registry=REGISTRY,
)
JOBS_REJECTED = Counter(
    "jobs_rejected",
    "Submissions refused as invalid (and dead-lettered).",
    namespace=_NS,
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "jobs_finished",
    "Jobs that reached a terminal state, by status "
    "(succeeded, failed, compensated, cancelled, escalated).",
    ["status"],
    namespace=_NS,
    registry=REGISTRY,
)
COMPENSATIONS = Counter(
    "compensations_started",
    "Compensation steps dispatched, by compensation task.",
    ["task"],
    namespace=_NS,
    registry=REGISTRY,
)
RETRIES = Counter(
    "step_retries",
    "Retry timers fired: a further attempt of a failed step was dispatched, by task.",
    ["task"],
    namespace=_NS,
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "queue_messages",
    "Messages ready in a queue (sampled by the scheduler).",
    ["queue"],
    namespace=_NS,
    registry=REGISTRY,
)
QUEUE_CONSUMERS = Gauge(
    "queue_consumers",
    "Consumers of a queue (sampled by the scheduler).",
    ["queue"],
    namespace=_NS,
    registry=REGISTRY,
)

# ---------------------------------------------------------------- steps (agents)
ATTEMPTS = Counter(
    "step_attempts",
    "Attempts an agent claimed and started, by task.",
    ["task"],
    namespace=_NS,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "step_duration_seconds",
    "How long a handler ran for one attempt, by task and outcome (succeeded, failed, stopped).",
    ["task", "outcome"],
    namespace=_NS,
    registry=REGISTRY,
    buckets=_DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "step_queue_wait_seconds",
    "From the dispatch's publish to an agent's claim, by task.",
    ["task"],
    namespace=_NS,
    registry=REGISTRY,
    buckets=_DURATION_BUCKETS,
)
STALE_RESULTS = Counter(
    "stale_results_rejected",
    "Results refused because the attempt's lease had been taken over, by task.",
    ["task"],
    namespace=_NS,
    registry=REGISTRY,
)
STALE_DISPATCHES = Counter(
    "stale_dispatches_dropped",
    "Dispatches an agent dropped at claim (superseded or duplicate deliveries).",
    namespace=_NS,
    registry=REGISTRY,
)
DISPATCH_MISMATCHES = Counter(
    "dispatch_mismatches",
    "Dispatches an agent refused because they do not match the recorded step (forged or "
    "altered): dead-lettered, never run.",
    namespace=_NS,
    registry=REGISTRY,
)
RUNNING_STEPS = Gauge(
    "running_steps", "Steps an agent is running now.", namespace=_NS, registry=REGISTRY
)

# ---------------------------------------------------------------- supervision
TIMEOUTS = Counter(
    "step_timeouts",
    "Timeouts by kind (schedule_to_start, start_to_close, schedule_to_close, heartbeat), "
    "counted where detected.",
    ["kind"],
    namespace=_NS,
    registry=REGISTRY,
)
RECOVERIES = Counter(
    "recoveries",
    "Supervisor recoveries by kind (why the deadline passed, as its failure's label: "
    "lease_expired, start_to_close, schedule_to_start, schedule_to_close; or repair: an "
    "outcome or a publish that no one followed up) and action (what followed: dispatch, "
    "retry_later, finished, stale).",
    ["kind", "action"],
    namespace=_NS,
    registry=REGISTRY,
)
AGENTS_LOST = Counter(
    "agents_lost",
    "Agents found dead (no Redis connection) or hung (no heartbeat), by reason.",
    ["reason"],
    namespace=_NS,
    registry=REGISTRY,
)
LIVE_AGENTS = Gauge(
    "agents_live",
    "Agents with a current heartbeat record, by pool (sampled by supervisors).",
    ["pool"],
    namespace=_NS,
    registry=REGISTRY,
)
ESCALATIONS_REPORTED = Counter(
    "escalations_reported",
    "Escalated jobs a supervisor reported (logged, and POSTed to the webhook if set).",
    namespace=_NS,
    registry=REGISTRY,
)

# ---------------------------------------------------------------- every service
DEAD_LETTERS = Counter(
    "dead_letters",
    "Messages parked in the dead-letter queue, by source queue and reason "
    "(too_large, invalid, unknown_task, mismatch).",
    ["queue", "reason"],
    namespace=_NS,
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "deliveries",
    "Deliveries settled, by queue and outcome (ack, dead_letter, requeue).",
    ["queue", "outcome"],
    namespace=_NS,
    registry=REGISTRY,
)
REDIS_CONNECTED = Gauge(
    "redis_connected",
    "1 when Redis answered the last health probe.",
    namespace=_NS,
    registry=REGISTRY,
)
AMQP_CONNECTED = Gauge(
    "amqp_connected",
    "1 while the RabbitMQ connection is open.",
    namespace=_NS,
    registry=REGISTRY,
)
READY = Gauge(
    "ready",
    "1 when the service is ready (connected and consuming).",
    namespace=_NS,
    registry=REGISTRY,
)


def count_timeout(error_type: str) -> None:
    """Count a step error that is a timeout (by its failure's label; others are ignored)."""
    failure = Failure.of(error_type)
    if failure is not None and failure.is_timeout:
        TIMEOUTS.labels(failure.label).inc()


_exported = False


def set_exported(on: bool) -> None:
    """Record that this process serves its metrics (health.serving does)."""
    global _exported
    _exported = on


def exported() -> bool:
    """Whether anyone can scrape this process's metrics: work done only to feed them (an
    extra Redis read to label a recovery) is skipped otherwise."""
    return _exported
