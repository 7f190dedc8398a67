"""The chaos suite, short form (``make chaos`` runs the full one): real service processes on
a private RabbitMQ node and a private Redis, one fault of each kind, every job checked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

from sasfleet.tools.chaos import ChaosConfig, run_chaos
from sasfleet.tools.chaos_report import render
from sasfleet.tools.chaos_workload import FAULT_KINDS


@pytest.mark.timeout(420)
async def test_short_chaos_run_loses_no_job_and_keeps_every_invariant(tmp_path: Path) -> None:
    console = Console(file=sys.stdout, width=110)
    config = ChaosConfig(jobs=300, faults=len(FAULT_KINDS), agents=3, seed=7, keep=True)

    # The private services' data and every service log stay in tmp_path (pytest keeps the
    # last few runs' tmp_path), for a look after a failure.
    result = await run_chaos(config, console, tmp_path / "run")

    render(result, console)
    assert sorted(f.kind for f in result.faults) == sorted(FAULT_KINDS)
    v = result.verdict
    assert len(result.accepted) == config.jobs
    assert v.lost == [], "accepted jobs missing"
    assert result.unfinished == 0
    assert v.violations == []
    assert result.garbage_problems == []
    assert result.service_problems == []
    assert sum(v.by_status.values()) == config.jobs
    assert set(v.by_status) <= {"succeeded", "compensated", "failed"}
    assert v.compensations > 0 and v.by_status["compensated"] > 0
    # Each agent fault hit an agent that ran steps, and a new attempt of them started.
    for kind in ("agent-kill", "agent-stop"):
        assert result.timings.detection[kind] or result.timings.idle[kind], kind
    # Every restart was followed by jobs finishing again.
    for kind in ("rabbitmq-restart", "redis-restart", "scheduler-kill", "supervisor-kill"):
        assert result.timings.recovery[kind], kind
