"""Acks the deliveries of a channel that are settled in the same event-loop iteration with
as few frames as possible: one ``basic.ack(multiple)`` for a run of consecutive delivery
tags, single acks for the rest.

Every ack frame is a socket write, and writes are the costliest thing a busy agent or
scheduler does. A multiple ack covers only tags this process has itself settled: tags on
a channel are consecutive, and the run is extended one tag at a time through tags acked
now or settled earlier, so a delivery still being handled (or one this process never
saw) ends the run. An ack is therefore never sent for a message before its effect is
recorded, exactly as with single acks. The frames are queued for the connection's writer
without waiting for the socket write (``wait=False``): nothing depends on that moment.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

import aiormq.abc
from aio_pika.abc import AbstractIncomingMessage


@dataclass
class AckPlan:
    """What one flush sends: ``multiple`` acks every tag up to it, ``singles`` one each."""

    multiple: int | None
    singles: list[int]
    floor: int  # afterwards, every tag up to here is settled


def plan_acks(floor: int, settled: set[int], ready: set[int]) -> AckPlan:
    """The frames that ack ``ready``, given that every tag up to ``floor`` and the tags in
    ``settled`` are settled already (pure: no I/O)."""
    top = floor
    while top + 1 in ready or top + 1 in settled:
        top += 1
    covered = [t for t in ready if t <= top]
    return AckPlan(max(covered) if covered else None, sorted(t for t in ready if t > top), top)


@dataclass
class _ChannelAcks:
    channel: aiormq.abc.AbstractChannel
    floor: int = 0
    settled: set[int] = field(default_factory=set)
    waiting: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    flushing: set[asyncio.Task[None]] = field(default_factory=set)  # strong references

    def ack(self, tag: int) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self.waiting:
            loop.call_soon(self._start_flush)
        self.waiting[tag] = future
        return future

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        self.flushing.add(task)
        task.add_done_callback(self.flushing.discard)

    def note_settled(self, tag: int) -> None:
        if tag > self.floor:
            self.settled.add(tag)

    async def _flush(self) -> None:
        waiting, self.waiting = self.waiting, {}
        plan = plan_acks(self.floor, self.settled, set(waiting))
        try:
            if plan.multiple is not None:
                await self.channel.basic_ack(delivery_tag=plan.multiple, multiple=True, wait=False)
            for tag in plan.singles:
                await self.channel.basic_ack(delivery_tag=tag, wait=False)
        except Exception as exc:  # the channel closed: the broker redelivers them all
            for future in waiting.values():
                if not future.done():
                    future.set_exception(exc)
            return
        self.floor = max(self.floor, plan.floor)
        self.settled = {t for t in self.settled | set(plan.singles) if t > self.floor}
        for future in waiting.values():
            if not future.done():
                future.set_result(None)


_channels: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, _ChannelAcks] = (
    weakref.WeakKeyDictionary()
)


def _acks_of(message: AbstractIncomingMessage) -> _ChannelAcks:
    channel = message.channel
    acks = _channels.get(channel)
    if acks is None:
        acks = _channels[channel] = _ChannelAcks(channel)
    return acks


async def ack(message: AbstractIncomingMessage) -> None:
    """Ack ``message`` together with the other acks of this loop iteration on its channel."""
    tag = message.delivery_tag
    if tag is None:
        return
    await _acks_of(message).ack(tag)


def note_settled(message: AbstractIncomingMessage) -> None:
    """``message`` was acked or rejected on its own: a later multiple ack may span it."""
    if message.delivery_tag is not None and not message.channel.is_closed:
        _acks_of(message).note_settled(message.delivery_tag)
