"""What each system is, as printed at the top of a run: its workers, how it is made
durable, how its producer pipelines submissions, and the phases it takes part in.

Kept apart from the runners so the orchestrator never imports a peer library.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.model import PHASES, Phase, RunSpec


@dataclass(frozen=True)
class System:
    """One system of the comparison."""

    name: str
    label: str
    workers: str
    durability: str
    phases: tuple[Phase, ...] = PHASES
    skipped_why: str = ""  # why it sits out the phases it does not take part in

    def producer(self, spec: RunSpec) -> str:
        """How the producer keeps submissions in flight."""
        if self.name in ("celery", "celery-threads", "dramatiq"):
            client = "py-amqp" if self.name.startswith("celery") else "pika BlockingConnection"
            return (
                f"{spec.producer_threads} threads; {client} waits for each publish's "
                "confirm, so one confirm in flight per thread"
            )
        if self.name == "sasfleet":
            return (
                f"asyncio: {spec.in_flight} submits awaiting their confirms at once, "
                "sent together as batch messages of up to 100"
            )
        return f"asyncio: {spec.in_flight} publishes awaiting their confirms at once"


def catalogue(spec: RunSpec) -> dict[str, System]:
    """Every system, described with the sizing of ``spec``."""
    queue = f"{spec.queue_type} queue"
    return {
        "sasfleet": System(
            "sasfleet",
            "SAS Fleet",
            f"1 scheduler, 1 supervisor, {spec.agents} agents x {spec.concurrency} steps",
            "quorum queues, persistent, confirms on every publish, ack after the state "
            "change is recorded in Redis; per one-step job: one dispatch message, and a "
            "share of a submit message (the client sends submissions made at the same "
            "moment together, up to 100 a message)",
        ),
        "sasfleet-1by1": System(
            "sasfleet-1by1",
            "SAS Fleet 1 by 1",
            f"as SAS Fleet: 1 scheduler, 1 supervisor, {spec.agents} agents x "
            f"{spec.concurrency} steps",
            "as SAS Fleet, but a submit message per job (Client(coalesce=1)): two "
            "messages per one-step job",
            phases=("e2e",),
            skipped_why="drain, load, multistep: the e2e phase shows what batching "
            "submissions is worth",
        ),
        "celery": System(
            "celery",
            "Celery prefork",
            "prefork, 2 processes, prefetch multiplier 4",
            f"{queue}, persistent, confirm_publish, acks_late (after the result is "
            "stored), Redis result backend",
        ),
        "celery-threads": System(
            "celery-threads",
            "Celery threads",
            "threads pool, 8 threads, prefetch multiplier 4",
            f"{queue}, persistent, confirm_publish, acks_late, Redis result backend",
        ),
        "dramatiq": System(
            "dramatiq",
            "Dramatiq",
            "2 processes x 8 threads",
            f"{queue}, persistent, confirm_delivery, ack after the result is stored, "
            "Redis result backend",
        ),
        "taskiq": System(
            "taskiq",
            "taskiq",
            "2 worker processes, prefetch 32, 32 tasks at once each",
            f"{queue}, persistent, publisher confirms, ack when saved, Redis result backend (JSON)",
            phases=("e2e", "drain", "load"),
            skipped_why="multistep: taskiq has no chain primitive (taskiq-pipelines is "
            "a separate package)",
        ),
        "raw": System(
            "raw",
            "raw aio-pika",
            "2 consumer processes, prefetch 32 each",
            f"{queue}s, persistent request and reply, confirms on both publishes, ack "
            "after the reply is confirmed; no state store",
            phases=("e2e", "load"),
            skipped_why="drain, multistep: the raw round trip is the reference of the "
            "e2e and load phases only",
        ),
    }
