"""The agent: runs registered task handlers from its pool's queue.

What task modules use::

    from sasfleet.agent import Registry, StepContext, NonRetryableError

    tasks = Registry()

    @tasks.task()
    async def echo(payload: dict, ctx: StepContext) -> dict:
        return payload
"""

from sasfleet.agent.context import StepContext
from sasfleet.agent.registry import Registry, TaskDef
from sasfleet.shared.errors import NonRetryableError, RetryAfter
from sasfleet.shared.messages.submit import RetrySpec

__all__ = [
    "NonRetryableError",
    "Registry",
    "RetryAfter",
    "RetrySpec",
    "StepContext",
    "TaskDef",
]
