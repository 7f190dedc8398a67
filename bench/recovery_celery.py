"""Celery under a worker fault: how soon do the tasks it held run again?

Celery is configured for reliability the documented way: late acks, reject (requeue) when
a pool process is lost, prefetch multiplier 1 (each pool process holds one task), a
prefork pool, RabbitMQ as broker and Redis as result backend. The task body records each
start (wall-clock ms and pid) in Redis, keyed by task id, so the n-th entry is attempt n.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from celery import Celery  # type: ignore[import-untyped]
from celery.result import AsyncResult  # type: ignore[import-untyped]

from bench.parent_death import guarded
from bench.procs import parent_pids
from bench.recovery_model import NOT_RECOVERED, FaultRun, now_ms

SYSTEM = "Celery"
FAULTS = ("SIGKILL worker", "SIGKILL pool child", "SIGSTOP worker")
TASK = "bench_recovery.sleep"
APP_MODULE = "bench.recovery_celery_app"
# The worker process reads these (see recovery_celery_app).
ENV_NS, ENV_BROKER, ENV_BACKEND = (
    "BENCH_RECOVERY_NS",
    "BENCH_RECOVERY_BROKER",
    "BENCH_RECOVERY_BACKEND",
)


def make_app(ns: str, broker: str, backend: str) -> Any:
    """A Celery app whose queue, exchange and result keys are all named after ``ns``."""
    app = Celery(ns, broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=ns,
        task_default_exchange=ns,
        task_default_routing_key=ns,
        result_backend_transport_options={"global_keyprefix": f"{ns}:"},
        worker_enable_remote_control=False,  # no pidbox queues to clean up
        broker_connection_retry_on_startup=True,
    )
    return app


def starts_key(ns: str, task_id: str) -> str:
    return f"{ns}:starts:{task_id}"


def ready_key(ns: str, worker: str) -> str:
    return f"{ns}:ready:{worker}"


@dataclass
class Worker:
    """One ``celery worker`` process tree started by this benchmark."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    children: set[int] = field(default_factory=set)  # pool processes seen, by pid

    @property
    def pid(self) -> int:
        return self.proc.pid

    def refresh_children(self) -> set[int]:
        """Remember the pool processes now running (an orphan outlives its parent)."""
        self.children |= child_pids(self.pid)
        return self.children

    def signal_all(self, sig: int) -> None:
        """Signal the main process and every pool process of this worker."""
        for pid in [self.pid, *sorted(self.refresh_children())]:
            _signal(pid, sig)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Warm shutdown (SIGCONT first: a stopped worker cannot exit), SIGKILL after
        ``timeout_s``; then SIGKILL pool processes orphaned by a killed main process."""
        if self.proc.poll() is None:
            self.refresh_children()
            self.signal_all(signal.SIGCONT)
            _signal(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for pid in self.children:
            if _runs_worker_of(pid, self.name):
                _signal(pid, signal.SIGCONT)
                _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it already exited
        os.kill(pid, sig)


def _runs_worker_of(pid: int, name: str) -> bool:
    """True while ``pid`` still runs the worker ``name`` or one of its pool processes
    (they share its command line): a pid reused since is never signalled."""
    try:
        return f"{name}@".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def child_pids(parent: int) -> set[int]:
    """Pids whose parent is ``parent``."""
    return {pid for pid, ppid in parent_pids().items() if ppid == parent}


@dataclass
class CeleryRig:
    """The broker/backend URLs, names and processes of one Celery fault run."""

    ns: str
    broker: str
    backend: str
    concurrency: int
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-celery-")))
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = make_app(self.ns, self.broker, self.backend)
        self.redis = redis.Redis.from_url(self.backend, decode_responses=True)

    def start_worker(self) -> Worker:
        """Start ``celery worker`` (prefork, ``concurrency`` processes); do not wait."""
        name = f"{self.ns}-{len(self.workers) + 1}"
        log_path = self.workdir / f"{name}.log"
        env = {**os.environ, ENV_NS: self.ns, ENV_BROKER: self.broker, ENV_BACKEND: self.backend}
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            APP_MODULE,
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            "INFO",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                guarded(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        worker = Worker(name, proc, log_path)
        self.workers.append(worker)
        return worker

    def ready_ms(self, worker: Worker) -> int | None:
        """When the worker said it was ready (its ``worker_ready`` signal), else None."""
        raw = self.redis.get(ready_key(self.ns, worker.name))
        return int(cast(str, raw)) if raw is not None else None

    def wait_ready(self, worker: Worker, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ready_ms(worker) is None:
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                tail = worker.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"celery worker {worker.name} did not start:\n{tail}")
            time.sleep(0.05)

    def starts(self, task_ids: list[str]) -> dict[str, list[tuple[int, int]]]:
        """Every recorded start of each task: (wall-clock ms, pid), attempt order."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.lrange(starts_key(self.ns, task_id), 0, -1)
        replies = cast(list[list[str]], pipe.execute())
        return {
            task_id: [(int(ts), int(pid)) for ts, pid in (e.split() for e in entries)]
            for task_id, entries in zip(task_ids, replies, strict=True)
        }

    def finished(self, task_ids: list[str]) -> int:
        """How many of the tasks have succeeded (per the result backend)."""
        return sum(1 for t in task_ids if AsyncResult(t, app=self.app).state == "SUCCESS")

    def close(self) -> None:
        """Stop every worker started, delete the queue, exchange and Redis keys of ``ns``."""
        for worker in self.workers:
            worker.stop()
        with self.app.connection_for_write() as conn:
            channel = conn.channel()
            channel.queue_delete(self.ns)
            channel.exchange_delete(self.ns)
            channel.close()
        keys = list(self.redis.scan_iter(match=f"{self.ns}:*", count=1000))
        if keys:
            self.redis.unlink(*keys)
        self.app.close()
        self.redis.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def wait_started(rig: CeleryRig, task_ids: list[str], timeout_s: float) -> dict[str, int]:
    """Wait until the worker's pool processes all run a task; returns task id -> pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = {t: s[0][1] for t, s in rig.starts(task_ids).items() if len(s) == 1}
        if len(running) >= rig.concurrency:
            return running
        time.sleep(0.05)
    raise TimeoutError(f"{rig.concurrency} celery tasks did not start within {timeout_s}s")


def wait_restarts(rig: CeleryRig, task_ids: list[str], fault_ms: int, cap_s: float) -> list[float]:
    """Seconds from the fault until each task started again (``NOT_RECOVERED`` after
    ``cap_s``)."""
    delays: dict[str, float] = {}
    deadline = time.monotonic() + cap_s
    while len(delays) < len(task_ids) and time.monotonic() < deadline:
        for task_id, starts in rig.starts(task_ids).items():
            later = [ts for ts, _ in starts[1:] if ts >= fault_ms]
            if later and task_id not in delays:
                delays[task_id] = (later[0] - fault_ms) / 1000
        time.sleep(0.02)
    return [delays.get(t, NOT_RECOVERED) for t in task_ids]


def wait_finished(rig: CeleryRig, task_ids: list[str], timeout_s: float) -> bool:
    """Wait until every task succeeded; False if some had not after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rig.finished(task_ids) == len(task_ids):
            return True
        time.sleep(0.5)
    return False


def _inject(fault: str, worker: Worker, running: dict[str, int]) -> tuple[int, list[str]]:
    """Apply ``fault``; returns its wall-clock ms and the ids of the tasks it hit."""
    worker.refresh_children()
    if fault == "SIGKILL pool child":
        task_id, pid = next(iter(running.items()))
        fault_ms = now_ms()
        _signal(pid, signal.SIGKILL)
        return fault_ms, [task_id]
    fault_ms = now_ms()
    if fault == "SIGKILL worker":
        _signal(worker.pid, signal.SIGKILL)  # the main process only, as an OOM kill would
        worker.proc.wait(timeout=10)
    else:
        worker.signal_all(signal.SIGSTOP)
    return fault_ms, list(running)


def run_fault(
    fault: str,
    broker: str,
    backend: str,
    k: int,
    work_s: float,
    cap_s: float,
    concurrency: int = 2,
) -> FaultRun:
    """Submit ``k`` tasks of ``work_s`` seconds, inject ``fault`` while the first worker's
    pool runs some, start a replacement worker (unless only a pool process was killed),
    and measure how soon the hit tasks run again."""
    rig = CeleryRig(f"bench-recovery-celery-{uuid.uuid4().hex[:6]}", broker, backend, concurrency)
    run = FaultRun(SYSTEM, fault)
    try:
        first = rig.start_worker()
        rig.wait_ready(first)
        task_ids = [str(rig.app.send_task(TASK, args=[work_s]).id) for _ in range(k)]
        running = wait_started(rig, task_ids, timeout_s=60)
        fault_ms, hit = _inject(fault, first, running)
        spare = None if fault == "SIGKILL pool child" else rig.start_worker()
        run.delays_s = wait_restarts(rig, hit, fault_ms, cap_s)
        if fault == "SIGSTOP worker":
            first.signal_all(signal.SIGCONT)
        ready = rig.ready_ms(spare) if spare is not None else None
        if ready is not None:
            run.notes["replacement ready"] = (ready - fault_ms) / 1000
        rounds = -(-k // concurrency)  # the tasks left run `concurrency` at a time
        run.all_finished = wait_finished(rig, task_ids, timeout_s=rounds * work_s + 60)
    finally:
        rig.close()
    return run
