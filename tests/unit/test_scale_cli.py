"""``sasfleet scale``: option parsing and the figures of a table row (no services run)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sasfleet.cli.main import main
from sasfleet.shared.client import JobOutcome
from sasfleet.tools import scale as scale_module
from sasfleet.tools.bench import BenchRun
from sasfleet.tools.scale import (
    busy_between,
    machine_busy_seconds,
    parse_counts,
    render_table,
    scale_row,
)
from sasfleet.tools.workload import RunResult


def test_agent_counts_parse_in_order() -> None:
    assert parse_counts("1,2,4,8") == (1, 2, 4, 8)
    assert parse_counts(" 8, 1 ") == (8, 1)
    assert parse_counts("3") == (3,)


@pytest.mark.parametrize("text", ["", "1,,2", "0", "65", "-1", "two", "1,2,2", "1.5"])
def test_bad_agent_counts_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_counts(text)


def test_the_command_is_mounted_and_refuses_bad_counts() -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["scale", "--help"]).output
    for option in ("--jobs", "--agents-counts", "--concurrency", "--in-flight"):
        assert option in help_text
    refused = runner.invoke(main, ["scale", "--agents-counts", "1,x"])
    assert refused.exit_code == 2
    assert "not an agent count" in refused.output


def test_options_reach_the_runs_with_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int, int]] = []

    async def fake_bench_once(
        settings: Any, workload: list[Any], agents: int, concurrency: int, in_flight: int
    ) -> BenchRun:
        calls.append((len(workload), agents, concurrency, in_flight))
        return BenchRun(_result(len(workload), elapsed_s=1.0), {"agent": 0.5})

    async def fake_purge(settings: Any) -> None:
        return None

    monkeypatch.setattr(scale_module, "bench_once", fake_bench_once)
    monkeypatch.setattr(scale_module, "purge_fleet", fake_purge)
    runner = CliRunner()
    done = runner.invoke(main, ["scale"])
    assert done.exit_code == 0, done.output
    assert calls == [(3000, n, 16, 512) for n in (1, 2, 4, 8)]
    calls.clear()
    args = ["scale", "-n", "10", "--agents-counts", "2,1", "--concurrency", "4", "--in-flight", "7"]
    assert runner.invoke(main, args).exit_code == 0
    assert calls == [(10, 2, 4, 7), (10, 1, 4, 7)]


def test_a_job_that_did_not_succeed_fails_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_bench_once(
        settings: Any, workload: list[Any], agents: int, concurrency: int, in_flight: int
    ) -> BenchRun:
        return BenchRun(_result(len(workload), elapsed_s=1.0, failed=1), {})

    async def fake_purge(settings: Any) -> None:
        return None

    monkeypatch.setattr(scale_module, "bench_once", fake_bench_once)
    monkeypatch.setattr(scale_module, "purge_fleet", fake_purge)
    assert CliRunner().invoke(main, ["scale", "-n", "5", "--agents-counts", "1"]).exit_code == 1


def test_a_run_that_does_not_end_in_time_fails_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    purged: list[str] = []

    async def hanging_bench_once(
        settings: Any, workload: list[Any], agents: int, concurrency: int, in_flight: int
    ) -> BenchRun:
        if agents == 2:
            await asyncio.sleep(60)
        return BenchRun(_result(len(workload), elapsed_s=1.0), {})

    async def fake_purge(settings: Any) -> None:
        purged.append(settings.prefix)

    monkeypatch.setattr(scale_module, "bench_once", hanging_bench_once)
    monkeypatch.setattr(scale_module, "purge_fleet", fake_purge)
    args = ["scale", "-n", "5", "--agents-counts", "1,2,4", "--run-timeout", "0.05"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 1
    assert "2 agents: no result within 0.05 s" in done.output
    assert "4 agents:" in done.output  # the next count still runs
    assert len(purged) == 3  # every count's prefix is purged, the hung one's too


def test_a_run_hung_after_its_workload_still_gives_its_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like ``Client.close`` when redis-py swallows the cancellation of its poller: the
    poller keeps looping and ``close`` waits for it until the run is cancelled."""

    async def poller() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as redis-py may
            await asyncio.sleep(60)
        await asyncio.Event().wait()  # runs on until cancelled once more

    async def closing_bench_once(
        settings: Any, workload: list[Any], agents: int, concurrency: int, in_flight: int
    ) -> BenchRun:
        task = asyncio.create_task(poller())
        await asyncio.sleep(0.02)
        run = BenchRun(_result(len(workload), elapsed_s=1.0), {"agent": 0.5})
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return run

    async def fake_purge(settings: Any) -> None:
        return None

    monkeypatch.setattr(scale_module, "bench_once", closing_bench_once)
    monkeypatch.setattr(scale_module, "purge_fleet", fake_purge)
    args = ["scale", "-n", "5", "--agents-counts", "1", "--run-timeout", "0.2"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "1 agents: 5 jobs/s" in done.output


def _result(jobs: int, elapsed_s: float, failed: int = 0) -> RunResult:
    result = RunResult(started=100.0, finished=100.0 + elapsed_s)
    for i in range(jobs):
        status = "failed" if i < failed else "succeeded"
        result.outcomes[f"j{i}"] = JobOutcome(f"j{i}", status)
        result.latencies_s.append((i + 1) / 1000)  # 1 ms .. jobs ms
    return result


def test_row_figures_per_1k_jobs_and_utilisation() -> None:
    run = BenchRun(
        _result(2000, elapsed_s=4.0),
        {"scheduler": 3.0, "agent": 2.0, "rabbitmq": 1.6, "redis": 0.4, "client": 0.0},
    )
    row = scale_row(4, run, cores=2, machine_busy_s=7.6)
    assert row.agents == 4 and row.jobs == 2000 and row.succeeded == 2000 and row.ok
    assert row.throughput == pytest.approx(500.0)
    assert row.p50_ms == pytest.approx(1000.0)
    assert row.p99_ms == pytest.approx(1980.0)
    assert row.cpu_per_1k == pytest.approx(
        {"scheduler": 1.5, "agent": 1.0, "rabbitmq": 0.8, "redis": 0.2, "client": 0.0}
    )
    assert row.utilisation == pytest.approx(
        {"scheduler": 0.75, "agent": 0.5, "rabbitmq": 0.4, "redis": 0.1, "client": 0.0}
    )
    assert row.total == pytest.approx(1.75)
    assert row.machine == pytest.approx(1.9)
    assert row.other == pytest.approx(0.15)


def test_row_without_machine_figures_or_time() -> None:
    row = scale_row(1, BenchRun(_result(10, elapsed_s=0.0, failed=2), {"agent": 1.0}), 2, None)
    assert row.utilisation == {"agent": 0.0}
    assert row.machine is None and row.other is None
    assert row.succeeded == 8 and not row.ok


def test_table_has_one_row_per_count_and_the_speed_up() -> None:
    rows = [
        scale_row(n, BenchRun(_result(100, elapsed_s=1.0 / n), {"agent": 0.1}), 2, None)
        for n in (1, 2)
    ]
    table = render_table(rows)
    assert table.row_count == 2
    speed_up = next(c for c in table.columns if c.header == "x")
    assert list(speed_up.cells) == ["1.00", "2.00"]


def test_busy_cpu_is_interpolated_within_the_samples() -> None:
    samples = [(0.0, 10.0), (1.0, 11.0), (2.0, 13.0)]
    assert busy_between(samples, 0.5, 1.5) == pytest.approx(1.5)
    assert busy_between(samples, 0.0, 2.0) == pytest.approx(3.0)
    assert busy_between(samples, -1.0, 1.0) is None  # before the first sample
    assert busy_between(samples[:1], 0.0, 0.0) is None


def test_machine_busy_seconds_leaves_out_idle_and_iowait(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 10 50 1000 40 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    busy = machine_busy_seconds(stat)
    assert busy is not None
    assert busy * scale_module._TICKS == pytest.approx(170)
    assert machine_busy_seconds(tmp_path / "missing") is None
