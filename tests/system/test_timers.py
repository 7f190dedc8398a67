"""Timers through the real services: delayed jobs, cron ticks fired once across two
schedulers, retry timers that survive a SIGKILLed scheduler, and priorities."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from history_support import TRIO, events, now_ms, view_of, with_options, written_by

from sasfleet.examples.tasks import order_job
from sasfleet.shared.cron import next_tick_ms
from sasfleet.shared.messages.submit import RetrySpec
from sasfleet.shared.statemachine import JOB_TERMINAL

# --------------------------------------------------------------------------- delayed jobs


async def test_delayed_job_does_not_start_before_its_delay(services, client):
    job_id = await client.submit("echo", {"late": True}, delay_s=2)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "succeeded" and outcome.result == {"late": True}
    view = await view_of(client, job_id)
    h = view.history
    (delay,) = events(h, "delay", step=0)
    match = re.fullmatch(r"starts in (\d+) ms", delay.detail or "")
    assert match, delay.detail
    assert 1900 <= int(match.group(1)) <= 2000
    start_at = delay.ts + int(match.group(1))
    (start,) = events(h, "start")
    (dispatch,) = events(h, "dispatch", step=0)
    (claim,) = events(h, "claim", step=0)
    assert start.detail == "start time reached"
    assert start_at <= start.ts <= dispatch.ts <= claim.ts
    assert claim.ts >= view.created_at + 2000
    assert claim.ts < view.created_at + 4000
    assert view.steps[0].attempt == 1


# --------------------------------------------------------------------------- cron


def _tick_of(job_id: str, name: str) -> int | None:
    m = re.fullmatch(rf"cron-{re.escape(name)}-(\d+)", job_id)
    return int(m.group(1)) if m else None


async def test_cron_schedule_fires_each_tick_once_across_two_schedulers(
    fleet, start_services, client, sasfleet_cli, redis, keys, eventually
):
    scheduler_a, scheduler_b, *_ = start_services(("scheduler", ()), *TRIO)
    name = "every2s"

    cron = "* * * * * */2"  # every 2 seconds (croniter's sixth field)
    before_add = now_ms()
    added = await sasfleet_cli("schedule", "add", name, cron, "echo", "--payload", '{"cron": true}')
    after_add = now_ms()
    assert added.returncode == 0, added.stderr
    listed = await sasfleet_cli("schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = listed.json()
    assert entry["schedule"]["name"] == name and entry["schedule"]["cron"] == cron
    assert entry["next_tick_ms"] % 2000 == 0

    async def cron_jobs() -> dict[int, str]:
        ids = await client._reader.job_ids(1000, newest_first=False)
        return {t: j for j in ids if (t := _tick_of(j, name)) is not None}

    async def four_ticks_done() -> bool:  # ~7 s of ticks
        found = await cron_jobs()
        if len(found) < 4:
            return False
        views = [await client.get(j) for j in found.values()]
        return all(v is not None and v.status in JOB_TERMINAL for v in views)

    await eventually(four_ticks_done, timeout=20, what="four cron ticks run")
    removed = await sasfleet_cli("schedule", "remove", name)
    removed_at = now_ms()
    assert removed.returncode == 0, removed.stderr
    listed = await sasfleet_cli("schedule", "list", "--json")
    assert listed.json() == []

    await asyncio.sleep(2.5)  # more than one period: a tick would have fired by now

    found = await cron_jobs()
    ticks = sorted(found)
    # The first tick after the schedule was added, then every consecutive tick, each with
    # one job; nothing after the removal.
    first = ticks[0]
    assert before_add < first <= next_tick_ms(cron, after_add), (before_add, after_add, ticks)
    assert ticks == [first + 2000 * i for i in range(len(ticks))], ticks
    assert len(ticks) >= 4
    assert ticks[-1] <= removed_at
    # The CLI's listing agrees with the jobs index.
    listed_jobs = await sasfleet_cli("jobs", "--json", "--limit", "1000")
    assert listed_jobs.returncode == 0, listed_jobs.stderr
    cli_ids = [j["job_id"] for j in listed_jobs.json() if _tick_of(j["job_id"], name)]
    assert sorted(cli_ids) == sorted(found.values())
    assert len(cli_ids) == len(set(cli_ids))
    creators: Counter[int] = Counter()
    for tick in ticks:
        view = await view_of(client, found[tick])
        assert view.job_id == f"cron-{name}-{tick}"
        assert view.status == "succeeded", (view.job_id, view.status, view.error)
        assert view.result == {"cron": True}
        (submit,) = events(view.history, "submit")  # created once
        assert len(events(view.history, "claim", step=0)) == 1  # ran once
        assert submit.ts >= tick
        pid = next(
            (s.pid for s in (scheduler_a, scheduler_b) if written_by(submit, "scheduler", s.pid)),
            None,
        )
        assert pid is not None, submit
        creators[pid] += 1
    print(f"cron jobs created by scheduler pid: {dict(creators)}")


# --------------------------------------------------------------------------- restarts


async def test_retry_timers_survive_a_sigkilled_scheduler(fleet, services, client, eventually):
    n = 10
    retry = RetrySpec(initial_interval_s=2, max_interval_s=10, jitter=0)
    job_ids = await asyncio.gather(
        *(
            client.submit(
                steps=with_options(
                    order_job(f"o-timer-{i}", flaky_step="reserve_stock", flaky_until=2),
                    0,
                    retry=retry,
                )
            )
            for i in range(n)
        )
    )

    async def all_waiting() -> bool:
        views = [await client.get(j) for j in job_ids]
        return all(v is not None and v.steps[0].status == "waiting_retry" for v in views)

    await eventually(all_waiting, timeout=15, what="all first steps waiting to retry")
    old = services.scheduler
    old.kill()
    assert await all_waiting(), "a retry timer fired before the scheduler was killed"

    await asyncio.sleep(3)  # every timer is now overdue, with no scheduler to fire it
    for job_id in job_ids:
        view = await view_of(client, job_id)
        assert view.status == "running" and view.steps[0].status == "waiting_retry"
    new = fleet.scheduler()

    outcomes = await asyncio.gather(*(client.wait(j, timeout=30) for j in job_ids))
    assert [o.status for o in outcomes] == ["succeeded"] * n
    for job_id in job_ids:
        view = await view_of(client, job_id)
        assert [s.attempt for s in view.steps] == [2, 1, 1]
        (retry_event,) = events(view.history, "retry", step=0)
        assert retry_event.attempt == 2
        assert written_by(retry_event, "scheduler", new.pid)
        (wait,) = events(view.history, "retry_later", step=0)
        assert written_by(wait, "scheduler", old.pid)
        assert retry_event.ts - wait.ts >= 3000


# --------------------------------------------------------------------------- priorities


async def test_high_priority_job_overtakes_a_backlog(start_services, client, jobs, eventually):
    start_services(
        ("scheduler", ()),
        ("supervisor", ()),
        ("agent", ("sasfleet.examples.tasks", "--concurrency", "1")),
    )
    backlog = await asyncio.gather(*(client.submit("sleep", {"seconds": 0.2}) for _ in range(20)))

    async def all_dispatched() -> bool:
        views = [await client.get(j) for j in backlog]
        return all(v is not None and v.steps and v.steps[0].attempt >= 1 for v in views)

    await eventually(all_dispatched, timeout=15, what="the backlog dispatched")
    urgent = await client.submit("sleep", {"seconds": 0.2}, priority="high")

    outcomes = await asyncio.gather(*(client.wait(j, timeout=60) for j in [urgent, *backlog]))
    assert [o.status for o in outcomes] == ["succeeded"] * 21
    urgent_done = (await view_of(client, urgent)).steps[0].finished_at
    backlog_done = [(await view_of(client, j)).steps[0].finished_at for j in backlog]
    overtaken = sum(1 for t in backlog_done if t > urgent_done)
    assert overtaken >= 10, (overtaken, sorted(backlog_done), urgent_done)
