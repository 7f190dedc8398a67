"""LocalFleet (demo, benchmarks, tests): the services it starts do not outlive it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from process_support import gone

from sasfleet.tools.fleet import LocalFleet

REPO_ROOT = Path(__file__).resolve().parents[2]

# A parent that starts a real agent and scheduler, reports them, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from sasfleet.shared.config import load_settings
    from sasfleet.tools.fleet import LocalFleet

    fleet = LocalFleet(load_settings(), cwd=Path(sys.argv[1]))
    services = [fleet.agent(concurrency=2), fleet.scheduler()]
    print(json.dumps([[s.pid, str(s.log_path)] for s in services]), flush=True)
    time.sleep(600)
    """
)


def start_then_sigkill_parent(env: dict[str, str]) -> list[tuple[int, str, bool]]:
    """Run PARENT, SIGKILL it once its services are up; each service's pid, log and
    whether it was gone within 15 s. Survivors are killed here (never left behind)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(REPO_ROOT)], stdout=subprocess.PIPE, env=env
    )
    children: list[tuple[int, str]] = []
    try:
        assert parent.stdout is not None
        children = [(pid, log) for pid, log in json.loads(parent.stdout.readline())]
        assert len(children) == 2 and not any(gone(pid) for pid, _ in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(gone(pid) for pid, _ in children):
            time.sleep(0.2)
        return [(pid, log, gone(pid)) for pid, log in children]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid, _ in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


async def test_services_stop_when_the_process_that_started_them_is_sigkilled(
    fleet: LocalFleet, fleet_env: dict[str, str]
) -> None:
    # ``fleet`` starts nothing here: it purges the prefix the services used afterwards.
    results = await asyncio.to_thread(start_then_sigkill_parent, {**os.environ, **fleet_env})
    for pid, log_path, exited in results:
        log = await asyncio.to_thread(Path(log_path).read_text, errors="replace")
        assert exited, f"service {pid} outlived its parent:\n{log[-2000:]}"
        assert "is gone; stopping" in log and " stopped" in log, log[-2000:]
