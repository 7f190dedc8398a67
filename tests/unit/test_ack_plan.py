"""Which ack frames a flush sends: a multiple ack never spans a delivery still in hand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sasfleet.shared.amqp.acks import AckPlan, plan_acks


def test_consecutive_tags_take_one_multiple_ack() -> None:
    assert plan_acks(0, set(), {1, 2, 3}) == AckPlan(3, [], 3)


def test_a_tag_still_in_hand_ends_the_run_and_later_tags_go_singly() -> None:
    # 3 is being handled: acking "up to 5" would ack it before its effect is recorded.
    assert plan_acks(0, set(), {1, 2, 4, 5}) == AckPlan(2, [4, 5], 2)


def test_the_run_spans_tags_settled_earlier_on_their_own() -> None:
    # 3 was dead-lettered (acked singly) and 4 acked singly in an earlier flush.
    assert plan_acks(2, {3, 4}, {5, 6}) == AckPlan(6, [], 6)


def test_nothing_right_above_the_floor_means_single_acks_only() -> None:
    assert plan_acks(10, set(), {12, 14}) == AckPlan(None, [12, 14], 10)


@given(
    st.integers(0, 50),
    st.sets(st.integers(1, 120), max_size=40),
    st.sets(st.integers(1, 120), min_size=1, max_size=40),
)
def test_every_ready_tag_is_acked_once_and_nothing_else_is(
    floor: int, settled: set[int], ready: set[int]
) -> None:
    settled = {t for t in settled if t > floor} - ready
    ready = {t for t in ready if t > floor}
    plan = plan_acks(floor, settled, ready)
    multiple_covers = set(range(floor + 1, plan.multiple + 1)) if plan.multiple else set()
    # A multiple ack spans only tags acked now or settled before: never one in hand.
    assert multiple_covers <= ready | settled
    assert (multiple_covers & ready) | set(plan.singles) == ready
    assert not multiple_covers & set(plan.singles)
    assert plan.floor >= floor and set(range(floor + 1, plan.floor + 1)) <= ready | settled
