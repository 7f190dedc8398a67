"""SAS Fleet: reliable jobs on RabbitMQ and Redis (scheduler, agents, supervisor).

What users write code against. Submitting and following jobs::

    from sasfleet import Client, StepSpec

    async with Client() as client:                     # settings from SASFLEET_* variables
        job_id = await client.submit("echo", {"x": 1})
        outcome = await client.wait(job_id, timeout=30)

Writing task handlers (``sasfleet agent run myapp.tasks``)::

    from sasfleet import NonRetryableError, Registry, StepContext

    tasks = Registry()

    @tasks.task()
    async def charge(payload: dict, ctx: StepContext) -> dict: ...

Everything else under ``sasfleet.*`` (``sasfleet.shared`` above all) is internal and may
change in any release. The names load on first use, so importing one part of the package
(a service, the pure state machine) does not import the client's I/O libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sasfleet.agent.context import StepContext
    from sasfleet.agent.registry import Registry
    from sasfleet.shared.client import Client, JobOutcome
    from sasfleet.shared.config import Settings, load_settings
    from sasfleet.shared.errors import (
        InvalidJob,
        JobTimeout,
        NonRetryableError,
        RetryAfter,
        SasFleetError,
    )
    from sasfleet.shared.messages.events import ErrorInfo
    from sasfleet.shared.messages.submit import RetrySpec, StepSpec, SubmitJob
    from sasfleet.shared.state.views import JobView

# Each public name and the module that defines it (a unit test keeps this table and the
# imports above the same).
_HOMES = {
    # Submitting jobs and following them
    "Client": "sasfleet.shared.client",
    "ErrorInfo": "sasfleet.shared.messages.events",
    "JobOutcome": "sasfleet.shared.client",
    "JobView": "sasfleet.shared.state.views",
    "Settings": "sasfleet.shared.config",
    "load_settings": "sasfleet.shared.config",
    # The submit contract
    "RetrySpec": "sasfleet.shared.messages.submit",
    "StepSpec": "sasfleet.shared.messages.submit",
    "SubmitJob": "sasfleet.shared.messages.submit",
    # Writing task handlers
    "NonRetryableError": "sasfleet.shared.errors",
    "Registry": "sasfleet.agent.registry",
    "RetryAfter": "sasfleet.shared.errors",
    "StepContext": "sasfleet.agent.context",
    # Errors
    "InvalidJob": "sasfleet.shared.errors",
    "JobTimeout": "sasfleet.shared.errors",
    "SasFleetError": "sasfleet.shared.errors",
}

__all__ = [  # noqa: RUF022 (grouped by what users do, like dramatiq's, not sorted)
    # Submitting jobs and following them
    "Client",
    "ErrorInfo",
    "JobOutcome",
    "JobView",
    "Settings",
    "load_settings",
    # The submit contract
    "RetrySpec",
    "StepSpec",
    "SubmitJob",
    # Writing task handlers
    "NonRetryableError",
    "Registry",
    "RetryAfter",
    "StepContext",
    # Errors
    "InvalidJob",
    "JobTimeout",
    "SasFleetError",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sasfleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
