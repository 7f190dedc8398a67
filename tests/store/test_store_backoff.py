"""The backoff between attempts, decided in Lua (``_lib.lua``'s ``retry_delay``) from the
retry policy stored with a step: called directly on Redis, and seen through the timers
that record + advance (or a recovery) set."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_support import BOOM, DECLINED, DISPATCH_MS, Saga, of, step

from sasfleet.shared.messages.codec import encode
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.messages.submit import RetrySpec
from sasfleet.shared.state.records import Finished, Fired, Recovered, RetryLater, Stale
from sasfleet.shared.state.scripts import prelude
from sasfleet.shared.statemachine import Failure, RetryPolicy

DEFAULT_DELAYS = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]  # attempts 1..8

# retry_delay itself, with the prelude and helpers every script gets: each case is a
# step's stored fields (policy, error, retry_after_ms), the attempt that failed and the
# jitter's random draw. Delays come back as exact decimal text (or "none").
RETRY_DELAY = "\n".join(
    [
        prelude(),
        (resources.files("sasfleet.shared.state") / "lua" / "_lib.lua").read_text("utf-8"),
        """
local out = {}
for i, case in ipairs(A.cases) do
  local delay = retry_delay(case.s, case.attempt, case.rand)
  out[i] = delay and string.format('%.17g', delay) or 'none'
end
return out
""",
    ]
)


def case(
    policy: RetryPolicy,
    attempt: int,
    *,
    error: ErrorInfo = BOOM,
    rand: float = 0.5,
    retry_after_ms: int | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {"policy": encode(policy).decode(), "error": encode(error).decode()}
    if retry_after_ms is not None:
        s["retry_after_ms"] = str(retry_after_ms)  # as a step's hash holds it
    return {"s": s, "attempt": attempt, "rand": rand}


async def delays(saga: Saga, *cases: dict[str, Any]) -> list[float | None]:
    """What retry_delay answers for each case, on the test's Redis."""
    raw = await saga.redis.eval(RETRY_DELAY, 0, json.dumps({"cases": list(cases)}))
    return [None if r == "none" else float(r) for r in raw]


async def fail_and_wait(saga: Saga, index: int = 0, job_id: str = "j1", **failure: Any) -> int:
    """Run the current attempt to a failure; the backoff its retry timer waits."""
    now = saga.clock.now_ms()
    later = await saga.run(index, job_id=job_id, error=failure.pop("error", BOOM), **failure)
    assert isinstance(later, RetryLater), later
    assert await saga.timer(index, job_id) == later.due
    return later.due - now


async def retry_when_due(saga: Saga, index: int = 0, job_id: str = "j1") -> DispatchOrder:
    due = await saga.timer(index, job_id)
    assert due is not None
    saga.clock.advance(int(due) - saga.clock.now_ms())
    fired = await saga.fire(index, job_id)
    assert isinstance(fired, Fired) and isinstance(fired.next, DispatchOrder)
    return fired.next


# --- retry_delay, called directly --------------------------------------------------------------


async def test_default_delays_double_from_half_a_second_and_cap_at_thirty_seconds(
    saga: Saga,
) -> None:
    policy = RetryPolicy(max_attempts=100)
    assert await delays(saga, *(case(policy, a) for a in range(1, 9))) == DEFAULT_DELAYS


async def test_the_policys_parameters_set_the_delays(saga: Saga) -> None:
    policy = RetryPolicy(max_attempts=100, initial_ms=100, coefficient=3.0, max_ms=1_000)
    assert await delays(saga, *(case(policy, a) for a in (1, 2, 3, 4))) == [100, 300, 900, 1000]


async def test_delays_are_whole_milliseconds(saga: Saga) -> None:
    policy = RetryPolicy(initial_ms=333, coefficient=1.5, max_ms=10_000)
    jittered = RetryPolicy(initial_ms=333, jitter=0.3)
    assert await delays(saga, case(policy, 2), case(jittered, 1, rand=0.123)) == [499, 257]


async def test_a_huge_attempt_number_gets_the_capped_delay(saga: Saga) -> None:
    policy = RetryPolicy(max_attempts=10**9)
    no_start = RetryPolicy(max_attempts=10**9, initial_ms=0)  # 0 * inf: still no wait
    assert await delays(saga, case(policy, 1_100), case(policy, 10**6), case(no_start, 10**6)) == [
        30_000,
        30_000,
        0,
    ]


async def test_jitter_spreads_a_delay_within_its_fraction_both_ways(saga: Saga) -> None:
    policy = RetryPolicy(jitter=0.2)
    draws = [0.0, 0.25, 0.5, 0.75, 0.999999]
    assert await delays(saga, *(case(policy, 1, rand=r) for r in draws)) == [
        400,
        450,
        500,
        550,
        599,
    ]
    capped = RetryPolicy(max_attempts=10, jitter=0.5)  # spread around the capped delay
    assert await delays(saga, case(capped, 9, rand=0.0), case(capped, 9, rand=0.999999)) == [
        15_000,
        44_999,
    ]


async def test_a_step_with_no_attempt_left_or_a_final_error_gets_no_retry(saga: Saga) -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable=["PaymentDeclined", "Fraud"])
    listed = ErrorInfo(type="PaymentDeclined", message="no", retryable=True)
    final = ErrorInfo(type=Failure.UNKNOWN_TASK, message="no handler", retryable=True)
    timeout = ErrorInfo(type=Failure.START_TO_CLOSE_TIMEOUT, message="slow", retryable=True)
    out_of_time = ErrorInfo(type=Failure.SCHEDULE_TO_CLOSE_TIMEOUT, message="x", retryable=True)
    assert await delays(
        saga,
        case(policy, 2),  # attempts left
        case(policy, 3),  # the last attempt failed
        case(policy, 4),
        case(policy, 1, error=DECLINED),  # the handler said so (retryable false)
        case(policy, 1, error=listed),  # the policy names its type
        case(policy, 1, error=final),  # a failure of the fleet's that no retry can help
        case(policy, 1, error=out_of_time),
        case(policy, 1, error=timeout),  # a timeout backs off like any failure
    ) == [1000, None, None, None, None, None, None, 500]


async def test_a_handlers_retry_after_replaces_the_backoff(saga: Saga) -> None:
    policy = RetryPolicy(max_attempts=3, max_ms=1_000, jitter=0.5)
    assert await delays(
        saga,
        case(policy, 1, retry_after_ms=45_000),  # past max_ms, and not spread
        case(policy, 2, retry_after_ms=0),
        case(policy, 3, retry_after_ms=10),  # but never past the last attempt
        case(policy, 1, retry_after_ms=10, error=DECLINED),
    ) == [45_000, 0, None, None]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    attempt=st.integers(min_value=1, max_value=100),
    initial_ms=st.integers(min_value=0, max_value=10**6),
    coefficient=st.floats(min_value=1.0, max_value=10.0),
    max_ms=st.integers(min_value=0, max_value=10**7),
)
async def test_backoff_never_shrinks_and_never_exceeds_the_cap(
    saga: Saga, attempt: int, initial_ms: int, coefficient: float, max_ms: int
) -> None:
    policy = RetryPolicy(
        max_attempts=1_000, initial_ms=initial_ms, coefficient=coefficient, max_ms=max_ms
    )
    now, later, first = await delays(
        saga, case(policy, attempt), case(policy, attempt + 1), case(policy, 1)
    )
    assert now is not None and later is not None
    assert 0 <= now <= later <= max_ms
    assert now == int(now)
    assert first == min(initial_ms, max_ms)


# --- the backoff as the store applies it --------------------------------------------------------


async def test_a_failing_step_waits_the_default_backoffs_between_its_attempts(
    saga: Saga,
) -> None:
    await saga.create([step(0, max_attempts=9)])
    waits = []
    for attempt in range(1, 9):
        waits.append(await fail_and_wait(saga))
        assert (await retry_when_due(saga)).attempt == attempt + 1
    assert waits == DEFAULT_DELAYS
    done = await saga.run(0, error=BOOM)  # the ninth and last attempt
    assert isinstance(done, Finished) and done.status == "failed"
    assert [h.detail for h in of((await saga.view()).history, "retry_later")] == [
        f"retry in {d} ms" for d in DEFAULT_DELAYS
    ]


async def test_the_steps_retry_spec_sets_its_backoff(saga: Saga) -> None:
    retry = RetrySpec(initial_interval_s=0.1, backoff_coefficient=3.0, max_interval_s=1.0)
    await saga.create([step(0, max_attempts=5, retry=retry)])
    waits = []
    for _ in range(4):
        waits.append(await fail_and_wait(saga))
        await retry_when_due(saga)
    assert waits == [100, 300, 900, 1000]


async def test_a_timer_waits_whole_milliseconds(saga: Saga) -> None:
    await saga.create([step(0, retry=RetrySpec(initial_interval_s=0.333, backoff_coefficient=1.5))])
    assert await fail_and_wait(saga) == 333
    await retry_when_due(saga)
    assert await fail_and_wait(saga) == 499
    assert of((await saga.view()).history, "retry_later")[-1].detail == "retry in 499 ms"


async def test_jittered_backoffs_spread_within_the_policys_fraction(saga: Saga) -> None:
    retry = RetrySpec(initial_interval_s=1, jitter=0.5)
    waits = []
    for i in range(24):
        await saga.create([step(0, retry=retry)], job_id=f"j{i}")
        waits.append(await fail_and_wait(saga, job_id=f"j{i}"))
    assert all(500 <= w <= 1_500 for w in waits), waits
    assert len(set(waits)) > 1, waits  # the draws differ


async def test_the_policys_non_retryable_errors_end_the_step_at_once(saga: Saga) -> None:
    retry = RetrySpec(non_retryable_errors=["Declined"])
    declined = ErrorInfo(type="Declined", message="no", retryable=True)
    await saga.create([step(0, retry=retry)])
    done = await saga.run(0, error=declined)
    assert isinstance(done, Finished) and done.status == "failed"
    await saga.create([step(0, retry=retry)], job_id="other")
    assert await fail_and_wait(saga, job_id="other") == 500  # another type backs off


async def test_a_non_retryable_error_gets_no_retry_with_attempts_left(saga: Saga) -> None:
    await saga.create([step(0, max_attempts=5)])
    done = await saga.run(0, error=DECLINED, retry_after_ms=10)
    assert isinstance(done, Finished) and done.status == "failed"
    assert await saga.timer(0) is None


async def test_a_handlers_retry_after_replaces_the_policys_backoff(saga: Saga) -> None:
    await saga.create([step(0, max_attempts=3)])
    assert await fail_and_wait(saga, retry_after_ms=45_000) == 45_000  # past the cap
    await retry_when_due(saga)
    # The request was for that retry only: the next failure backs off by the policy.
    assert await fail_and_wait(saga) == 1_000


async def test_timeouts_back_off_like_any_failure(saga: Saga) -> None:
    retry = RetrySpec(initial_interval_s=0.1, backoff_coefficient=3.0)
    await saga.create([step(0, max_attempts=3, retry=retry)])
    for attempt, wait in ((1, 100), (2, 300)):
        saga.clock.advance(DISPATCH_MS)  # no agent takes the dispatch
        recovered = await saga.recover(0)
        assert isinstance(recovered, Recovered)
        assert recovered.failure == "ScheduleToStartTimeout"
        assert recovered.next == RetryLater(due=saga.clock.now_ms() + wait)
        assert (await retry_when_due(saga)).attempt == attempt + 1
    # The last attempt is claimed, and its agent is lost: no attempt is left.
    assert await saga.claim(0, await saga.lease(0))
    saga.clock.advance(2_000)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.failure == "LeaseExpired"
    done = recovered.next
    assert isinstance(done, Finished) and done.status == "failed"
    assert json.loads(done.error)["type"] == "LeaseExpired"
    assert [h.detail for h in of((await saga.view()).history, "retry_later")] == [
        "retry in 100 ms",
        "retry in 300 ms",
    ]


async def test_a_timeout_backs_off_with_a_handlers_earlier_request_forgotten(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await fail_and_wait(saga, retry_after_ms=7_000) == 7_000
    await retry_when_due(saga)
    assert await saga.claim(0, await saga.lease(0))
    saga.clock.advance(2_000)  # attempt 2's agent is lost
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered)
    assert recovered.next == RetryLater(due=saga.clock.now_ms() + 1_000)  # the policy's
    late = await saga.record(0, 2, error=BOOM)  # the lost agent is too late
    assert late == Stale(status="waiting_retry", lease=2)
