"""The benchmark's worker processes (peers' workers, run children) do not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from process_support import gone

REPO_ROOT = Path(__file__).resolve().parents[2]

# Stands in for a peer's worker: says what stopped it.
WORKER = textwrap.dedent(
    """
    import signal, sys, time
    def stop(signum, frame):
        print("worker got", signal.Signals(signum).name, flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("worker up", flush=True)
    time.sleep(600)
    """
)

# Stands in for a benchmark run: starts the worker as bench does, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bench.procs import spawn
    worker = spawn("worker", [sys.executable, "-c", sys.argv[2]], {}, Path(sys.argv[1]))
    print(worker.pid, flush=True)
    time.sleep(600)
    """
)


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_bench_worker_gets_sigterm_when_the_benchmark_is_sigkilled(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), WORKER],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    worker_pid = 0
    log = tmp_path / "worker.log"
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        assert wait_for(lambda: "worker up" in log.read_text(), 30), log.read_text()
        # The guard exec'd the worker: the PID bench knows is the worker's own.
        assert b"worker up" in Path(f"/proc/{worker_pid}/cmdline").read_bytes()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_for(lambda: gone(worker_pid), 15), f"worker {worker_pid} outlived the bench"
        assert "worker got SIGTERM" in log.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if worker_pid and not gone(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_the_guard_starts_nothing_when_its_parent_is_already_gone() -> None:
    # PID 1 is not this test's process, so the guard sees a parent other than the one named.
    done = subprocess.run(
        [sys.executable, "-m", "bench.parent_death", "1", sys.executable, "-c", "print('ran')"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "ran" not in done.stdout
    assert "process 1 is gone; not starting" in done.stderr
