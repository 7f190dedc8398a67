"""The unit tier is pure: a test that opens a network connection fails (its place is the
store or system tier)."""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: socket.socket, *args: Any) -> Any:
        raise AssertionError(f"a unit test opened a network connection: {args!r}")

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refused)
