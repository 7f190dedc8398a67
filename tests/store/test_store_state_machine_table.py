"""The state machine's tables, walked against the scripts on real Redis: the scripts make
exactly the moves of STEP_MOVES and JOB_MOVES, no other, and every one of them.

Jobs are driven through the scripts along paths that reach every step status and every
job status: a success, retries, timeouts, compensations, an escalation, cancels at each
point, delayed starts, a release, a lost agent. Each point reached on a path is a
situation. In a copy of the job at that point (made in Redis), with time moved on or not
and, set straight into its hashes (HSET), the job's cancel flag or a policy of one attempt
for its current step, every script that can change a step or a job is called, once per
copy. Each call is watched: the statuses before and after it, and the moves its history
entries name, which must chain from the one to the other (no status changes without its
move in the history). The moves seen, over all calls, must be exactly the tables' moves.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from store_support import BOOM, DECLINED, FLEET, Saga, step

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.codec import encode
from sasfleet.shared.state.store import NewJob, StateStore
from sasfleet.shared.statemachine import (
    JOB_MOVES,
    STEP_MOVES,
    JobMove,
    JobStatus,
    Move,
    RetryPolicy,
    StepStatus,
)

NSTEPS = 2  # forward steps 0, 1; their compensations are steps 2, 3
STEPS = [step(i, f"undo{i}", schedule_to_close_s=20) for i in range(NSTEPS)]

# Paths through the scripts, call by call. Each call acts on the job's current step with
# its lease ("_prev": on the step before it); "_when_due" first moves time to the step's
# deadline (recover) or timer (fire); "sleep" moves it past the schedule-to-close limit.
PATHS = [
    "create claim ok advance claim ok+",
    "create claim ok+ claim ok advance",
    "create claim fail advance fire_when_due claim fail advance fire_when_due claim fail advance",
    "create claim ok advance claim declined advance claim ok advance claim ok advance",
    "create claim ok advance claim declined advance claim fail advance"
    " fire_when_due claim declined advance",
    "create claim ok advance claim declined advance cancel claim fail advance"
    " fire_when_due claim ok advance",
    "create recover_when_due fire_when_due claim recover_when_due"
    " fire_when_due claim recover_when_due",
    "create claim release claim ok+ recover_when_due_prev claim",
    "create claim expire_agent recover fire_when_due claim ok+",
    "create claim fail advance sleep fire_when_due",
    "create claim fail advance cancel advance",
    "create cancel advance",
    "create claim cancel fail advance",
    "create claim ok advance cancel advance claim ok advance",
    "create claim ok recover_when_due claim ok",
    "create_delayed fire_when_due claim ok+",
    "create_delayed cancel advance",
    "cancel create",
]
# The calls each situation is probed with: every script that acts on a job. (A lost
# agent's expire_agent, which only makes deadlines due, is called on the paths.)
PROBES = [
    "create",
    "fail_submission",
    "claim",
    "ok",
    "ok+",
    "fail",
    "advance",
    "recover",
    "fire",
    "release",
    "cancel",
    "renew",
    "settle",
    "advance_prev",
    "recover_prev",
    "settle_prev",
]
LATER_MS = [0, 10_000, 3_600_000]  # past the leases, dispatch deadlines and timers; past all
FLAGS = ["", "cancel_requested", "one_attempt"]
ONE_ATTEMPT = encode(RetryPolicy(max_attempts=1)).decode()

STEP_EVENTS = {m.value for m in Move}
JOB_EVENTS = {m.value for m in JobMove} | {"submit", "reject"}  # and a job's creation
OWN_KEYS = 3 + 2 * NSTEPS  # a job's own keys: its hash, its steps', history, cancel marker

# Test setup: a copy of a job under another id of its bucket (so one slot), made in Redis
# from everything of the job's that the scripts read (keys.py): its own keys, and its
# members of the bucket's deadlines, timers, escalations, jobs, and its agent's steps (the
# copy has the same agent); then the flag, if any, set in the copy's hashes.
# KEYS: the source's own keys, the copy's, then the five sets. ARGV: source id, copy id,
# flag ("" for none), the current step's index, the policy of one attempt.
CLONE = f"""
local n, src, dst = {OWN_KEYS}, ARGV[1], ARGV[2]
for i = 1, n do
  redis.call('DEL', KEYS[n + i])
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('COPY', KEYS[i], KEYS[n + i]) end
end
local members = {{''}}
for i = 0, {2 * NSTEPS - 1} do members[#members + 1] = '|' .. i end
for s = 2 * n + 1, 2 * n + 4 do
  for _, m in ipairs(members) do
    local score = redis.call('ZSCORE', KEYS[s], src .. m)
    if score then redis.call('ZADD', KEYS[s], score, dst .. m) end
  end
end
for _, m in ipairs(members) do
  if redis.call('SISMEMBER', KEYS[2 * n + 5], src .. m) == 1 then
    redis.call('SADD', KEYS[2 * n + 5], dst .. m)
  end
end
if redis.call('EXISTS', KEYS[n + 1]) == 1 then
  redis.call('HSET', KEYS[n + 1], 'id', dst)
  if ARGV[3] == 'cancel_requested' then redis.call('HSET', KEYS[n + 1], 'cancel_requested', 1) end
  local step = KEYS[n + 2 + tonumber(ARGV[4])]
  if ARGV[3] == 'one_attempt' and redis.call('EXISTS', step) == 1 then
    redis.call('HSET', step, 'policy', ARGV[5])
  end
end
return 1
"""

T = TypeVar("T")
# A job's status, its steps' statuses and the length of its history.
Snapshot = tuple[str | None, list[str | None], int]


def table_moves(table: dict[Any, Any]) -> set[tuple[str, str, str]]:
    """Every (move, from, to) of a table."""
    return {(str(m), str(src), str(to)) for m, (sources, to) in table.items() for src in sources}


@dataclass
class Seen:
    """The moves the calls made: (event, from, to) -> the first call that made it."""

    step: dict[tuple[str, str, str], str] = field(default_factory=dict)
    job: dict[tuple[str, str, str], str] = field(default_factory=dict)
    step_statuses: set[str] = field(default_factory=set)  # the statuses probed
    job_statuses: set[str] = field(default_factory=set)


def chain(
    what: str, before: str | None, after: str | None, entries: list[dict[str, Any]], where: str
) -> list[tuple[str, str, str]]:
    """The moves ``entries`` name, checked to lead from ``before`` to ``after``."""
    current, moves = before, []
    for e in entries:
        frm, to = e.get("from"), e.get("to")
        if frm is None:  # a job's record is created (submit, reject)
            assert current is None, f"{where}: {what} created again by {e}"
        else:
            assert frm == current, f"{where}: {what} is {current}, its history says {e}"
            if frm != to:
                moves.append((e["event"], frm, to))
        current = to
    assert current == after, f"{where}: {what} went {before} -> {after}, its history: {entries}"
    return moves


class Job:
    """One job of the walk, with its own clock (so jobs run side by side) and its own
    agent (so that one's expire_agent leaves the others alone)."""

    def __init__(self, store: StateStore, job_id: str, seen: Seen, agent: str = "") -> None:
        self.redis, self.keys, self.job_id, self.seen = store.redis, store.keys, job_id, seen
        self.agent = agent or f"agent-{job_id}"
        self.clock = ManualClock()
        self.store = copy.copy(store)  # the same scripts and connections, its own clock
        self.store.clock = self.clock
        # The current step's index, lease and policy (and the previous step's), when known.
        self.known: dict[int, tuple[int, int, str | None]] = {}

    async def _step(self, offset: int) -> tuple[int, int, str | None]:
        """The current step's index (+ ``offset``), its lease and its retry policy."""
        if offset in self.known:
            return self.known[offset]
        current = await self.redis.hget(self.keys.job(self.job_id), "current")
        index = int(current or 0) + offset
        key = self.keys.step(self.job_id, index)
        lease, policy = await self.redis.hmget(key, "lease", "policy")
        return index, int(lease or 0), policy

    async def op(self, name: str) -> Any:
        s, jid, now = self.store, self.job_id, self.clock.now_ms()
        if name == "create":
            return await s.create_job(NewJob(jid, STEPS), "scheduler-1")
        if name == "create_delayed":
            return await s.create_job(NewJob(jid, STEPS, start_at_ms=now + 1_000), "scheduler-1")
        if name == "cancel":
            return await s.cancel(jid, "client-1")
        if name == "sleep":
            return self.clock.advance(25_000)
        if name == "expire_agent":
            return await s.expire_agent(self.agent)
        if name == "fail_submission":
            return await s.fail_submission(jid, BOOM, "scheduler-1", "", "")
        name, prev = name.removesuffix("_prev"), name.endswith("_prev")
        index, lease, policy = await self._step(-1 if prev else 0)
        if name.endswith("_when_due"):
            k, b = self.keys, self.keys.bucket_of(jid)
            due_set = k.deadlines(b) if name.startswith("recover") else k.timers(b)
            due = await self.redis.zscore(due_set, f"{jid}|{index}")
            assert due is not None, f"{jid}: step {index} has nothing due for {name}"
            self.clock.advance(max(0, int(due) - now))
            name = name.removesuffix("_when_due")
        if name == "claim":
            resolved = msgspec.json.decode(policy, type=RetryPolicy) if policy else FLEET
            return await s.claim(jid, index, lease, self.agent, resolved)
        if name in ("ok", "ok+"):
            return await s.record(jid, index, lease, self.agent, result=b"1", advance=name == "ok+")
        if name in ("fail", "declined"):
            error = BOOM if name == "fail" else DECLINED
            return await s.record(jid, index, lease, self.agent, error=error)
        if name == "advance":
            return await s.advance(jid, index, lease, "scheduler-1")
        if name == "recover":
            return await s.recover(jid, index, "supervisor-1")
        if name == "fire":
            return await s.fire_timer(jid, index, "scheduler-1")
        if name == "release":
            return await s.release(jid, index, lease, self.agent)
        if name == "renew":
            return await s.renew(jid, index, lease)
        if name == "settle":
            return await s.settle(jid, index)
        raise AssertionError(f"no call {name}")

    async def snapshot(self, history_from: int = 0) -> tuple[Snapshot, list[dict[str, Any]]]:
        """The job's statuses, and its history entries from ``history_from`` on."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.job(self.job_id), "status")
            for i in range(2 * NSTEPS):
                pipe.hget(k.step(self.job_id, i), "status")
            pipe.lrange(k.history(self.job_id), history_from, -1)
            job, *steps, history = await pipe.execute()
        return (job, steps, history_from + len(history)), [json.loads(h) for h in history]

    async def watched(self, name: str, where: str, before: Snapshot | None = None) -> None:
        """Call ``name``, and note the moves it made, checked against the statuses before
        (taken now unless given) and after it."""
        if before is None:
            before, _ = await self.snapshot()
        job_before, steps_before, start = before
        try:
            await self.op(name)
        except Exception as exc:
            raise AssertionError(f"{where}: {name} raised {exc!r}") from exc
        (job_after, steps_after, _), entries = await self.snapshot(start)
        where = f"{where}: {name}"
        mine = [e for e in entries if "step" not in e and e["event"] in JOB_EVENTS]
        for move in chain("the job", job_before, job_after, mine, where):
            self.seen.job.setdefault(move, where)
        for i, (was, now) in enumerate(zip(steps_before, steps_after, strict=True)):
            if was is None and now is not None:
                was = StepStatus.PENDING  # its record is created pending, by no move
            mine = [e for e in entries if e.get("step") == i and e["event"] in STEP_EVENTS]
            for move in chain(f"step {i}", was, now, mine, where):
                self.seen.step.setdefault(move, where)

    def _own_keys(self, job_id: str) -> list[str]:
        k = self.keys
        steps = [k.step(job_id, i) for i in range(2 * NSTEPS)]
        return [k.job(job_id), *steps, k.history(job_id), k.cancel_marker(job_id)]

    async def clone(self, job_id: str, flag: str = "") -> Job:
        """A copy of this job under ``job_id`` (of its bucket), at this job's time, with
        ``flag`` set in its hashes."""
        k, b = self.keys, self.keys.bucket_of(self.job_id)
        assert k.bucket_of(job_id) == b
        if not self.known:  # a situation's job is not called again: its steps stay put
            self.known = {o: await self._step(o) for o in (0, -1)}
        known = dict(self.known)
        sets = [k.deadlines(b), k.timers(b), k.escalations(b), k.jobs(b)]
        keys = [*self._own_keys(self.job_id), *self._own_keys(job_id), *sets]
        keys.append(k.agent_steps(self.agent, b))
        args = [self.job_id, job_id, flag, known[0][0], ONE_ATTEMPT]
        await self.redis.eval(CLONE, len(keys), *keys, *args)
        twin = Job(self.store, job_id, self.seen, self.agent)
        twin.clock.advance(self.clock.now_ms() - twin.clock.now_ms())
        twin.known = known
        if flag == "one_attempt" and known[0][2] is not None:
            twin.known[0] = (*known[0][:2], ONE_ATTEMPT)
        return twin

    async def state(self) -> tuple[object, ...]:
        """Everything of the job's that the scripts read, its times relative to now."""
        k, jid, now = self.keys, self.job_id, self.clock.now_ms()
        b = k.bucket_of(jid)

        def rel(value: object) -> object:
            if isinstance(value, str) and value.isdigit() and int(value) > 10**12:
                return f"now{int(value) - now:+d}"
            return value - now if isinstance(value, float) else value

        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._own_keys(jid)[: 1 + 2 * NSTEPS]:
                pipe.hgetall(key)
            pipe.lrange(k.history(jid), 0, -1)
            pipe.get(k.cancel_marker(jid))
            for i in range(2 * NSTEPS):
                pipe.zscore(k.deadlines(b), f"{jid}|{i}")
                pipe.zscore(k.timers(b), f"{jid}|{i}")
                pipe.sismember(k.agent_steps(self.agent, b), f"{jid}|{i}")
            pipe.zscore(k.escalations(b), jid)
            job, *rest = await pipe.execute()
        job.pop("id", None)
        hashes = [job, *rest[: 2 * NSTEPS]]
        fields = tuple(tuple(sorted((f, rel(v)) for f, v in h.items())) for h in hashes)
        return (fields, *(rel(v) for v in rest[2 * NSTEPS :]))


async def walk(saga: Saga) -> Seen:
    seen, ids = Seen(), itertools.count()

    def new_id(bucket: int | None = None) -> str:
        """A fresh job id (of ``bucket``, if given)."""
        while True:
            job_id = f"w{next(ids)}"
            if bucket is None or saga.store.keys.bucket_of(job_id) == bucket:
                return job_id

    # Every path once, each of its calls watched.
    async def walk_path(path: list[str]) -> None:
        job = Job(saga.store, new_id(), seen)
        for n, name in enumerate(path):
            await job.watched(name, f"path {path[: n + 1]}")

    await gather(walk_path(p.split()) for p in PATHS)

    # Each point of a path is a situation: a job driven there (the copies of it made for
    # the probes are checked once to be faithful).
    async def reach(setup: tuple[str, ...]) -> tuple[tuple[str, ...], Job, Snapshot]:
        job = Job(saga.store, new_id(), seen)
        for name in setup:
            await job.op(name)
        twin = await job.clone(new_id(saga.store.keys.bucket_of(job.job_id)))
        assert await twin.state() == await job.state(), f"a bad copy of the job at {setup}"
        before, _ = await job.snapshot()
        return setup, job, before

    paths = [p.split() for p in PATHS]
    prefixes = sorted({tuple(p[:n]) for p in paths for n in range(len(p) + 1)})
    situations = await gather(reach(p) for p in prefixes)

    async def probe(
        setup: tuple[str, ...], job: Job, before: Snapshot, later_ms: int, flag: str, name: str
    ) -> None:
        twin = await job.clone(new_id(saga.store.keys.bucket_of(job.job_id)), flag)
        twin.clock.advance(later_ms)
        job_status, steps, _ = before  # the flags change no status
        if job_status is not None:
            seen.job_statuses.add(job_status)
            seen.step_statuses.add(str(steps[twin.known[0][0]]))
        await twin.watched(name, f"at {list(setup)}, +{later_ms} ms {flag or 'as is'}", before)

    runs = [
        (*situation, *variant)
        for situation in situations
        for variant in itertools.product(LATER_MS, FLAGS, PROBES)
    ]
    await gather(probe(*run) for run in runs)
    return seen


async def gather(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``calls`` side by side, a few dozen at a time (a cluster client's connections
    to a node are limited)."""
    running = asyncio.Semaphore(48)

    async def one(call: Awaitable[T]) -> T:
        async with running:
            return await call

    return await asyncio.gather(*map(one, calls))


async def test_the_scripts_make_exactly_the_moves_of_the_state_machines_tables(
    saga: Saga,
) -> None:
    seen = await walk(saga)
    # Every status was set up and probed with every script.
    assert seen.step_statuses == set(StepStatus)
    assert seen.job_statuses == set(JobStatus)
    # Each change of status a script made is a move of the tables, named in the history
    # as that move...
    for (event, frm, to), where in seen.step.items():
        assert (event, frm, to) in table_moves(STEP_MOVES), f"step {event} {frm} -> {to}: {where}"
    for (event, frm, to), where in seen.job.items():
        assert (event, frm, to) in table_moves(JOB_MOVES), f"job {event} {frm} -> {to}: {where}"
    # ...the (from, to) pairs made are exactly the tables' pairs...
    assert {(f, t) for _, f, t in seen.step} == {(f, t) for _, f, t in table_moves(STEP_MOVES)}
    assert {(f, t) for _, f, t in seen.job} == {(f, t) for _, f, t in table_moves(JOB_MOVES)}
    # ...and each move of the tables was made from each of its sources.
    assert set(seen.step) == table_moves(STEP_MOVES)
    assert set(seen.job) == table_moves(JOB_MOVES)
