"""SAS Fleet shared package: contracts, pure logic, and the Redis and RabbitMQ adapters.

``Client`` is importable from here (``from sasfleet.shared import Client``); it is loaded
lazily so that importing pure modules (state machine, messages) pulls in no I/O library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sasfleet.shared.client import Client, JobOutcome

__all__ = ["Client", "JobOutcome"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sasfleet.shared import client

        return getattr(client, name)
    raise AttributeError(name)
