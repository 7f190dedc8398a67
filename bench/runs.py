"""Runs one :class:`~bench.model.RunSpec` in a child process (``python -m bench.child``)
and cleans up after it, whatever became of the child."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys

from bench.cleanup import clean_run
from bench.model import RESULT_MARK, Measurement, RunSpec
from bench.parent_death import guarded
from bench.procs import REPO_ROOT
from sasfleet.shared.config import load_settings
from sasfleet.tools.purge import purge_fleet


def child_timeout_s(spec: RunSpec) -> float:
    """Backstop for a hung child: the child gives up by itself after a stall."""
    expected = spec.jobs * spec.steps / 20 + (spec.jobs / spec.rate if spec.rate else 0)
    return 300 + 2 * spec.stall_timeout_s + expected


def run_child(spec: RunSpec) -> tuple[Measurement, str]:
    """One run in its own process; returns its measurement and its stderr."""
    proc = subprocess.Popen(
        guarded([sys.executable, "-m", "bench.child", spec.to_json()]),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=child_timeout_s(spec))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the child stops its workers and cleans up
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    except KeyboardInterrupt:
        # Let the child stop its workers and clean up (it ignores signals after the first).
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=90)
        raise
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            return Measurement.from_json(line[len(RESULT_MARK) :]), err
    return Measurement.failed(spec, f"child exited {proc.returncode} without a result"), err


async def _clean(spec: RunSpec) -> None:
    if spec.system.startswith("sasfleet"):
        settings = load_settings(
            amqp_url=spec.amqp_url, redis_url=spec.redis_url, prefix=spec.prefix
        )
        await purge_fleet(settings)
    else:
        await clean_run(spec)


def clean_after(spec: RunSpec) -> str:
    """Delete whatever the run may have left (a no-op after a clean child); the error
    text if that failed, so one broken run does not end the comparison."""
    try:
        asyncio.run(_clean(spec))
    except Exception as exc:
        return f"clean-up of {spec.prefix} failed: {type(exc).__name__}: {exc}"
    return ""
