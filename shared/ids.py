"""Identifiers for jobs and service instances."""

from __future__ import annotations

import os
import socket
import uuid

_JOB_ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
MAX_JOB_ID_LENGTH = 128


def new_job_id() -> str:
    """A fresh random job id (32 hex characters)."""
    return uuid.uuid4().hex


def is_valid_job_id(value: str) -> bool:
    """Job ids go into Redis keys and hash tags, so braces and spaces are not allowed."""
    return 0 < len(value) <= MAX_JOB_ID_LENGTH and set(value) <= _JOB_ID_ALPHABET


def instance_id(role: str) -> str:
    """Who did it, for the history: role, host, pid and a short random suffix."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def job_id_for_key(idempotency_key: str) -> str:
    """The job id a submission with this idempotency key gets when it names no job id.

    Derived, so that a client re-submitting with the same key learns the same id.
    """
    return "k" + uuid.uuid5(uuid.NAMESPACE_URL, f"sasfleet:{idempotency_key}").hex
