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


def submitted_job_id(
    job_id: str | None,
    idempotency_key: str | None,
    message_id: str | None = None,
    index: int | None = None,
) -> str | None:
    """The id a submitted job gets — the one rule, for the client and the scheduler alike.

    The id the job names; else the one derived from its idempotency key (so every
    re-submission with the key, from any client, finds the same job: the job id is the one
    idempotency mechanism); else the AMQP ``message_id`` (for job ``index`` of a batch,
    ``<message_id>.<index>``); else a fresh one. None when the ``message_id`` does not make
    a valid job id.
    """
    if job_id:
        return job_id
    if idempotency_key:
        return job_id_for_key(idempotency_key)
    if not message_id:
        return new_job_id()
    candidate = message_id if index is None else f"{message_id}.{index}"
    return candidate if is_valid_job_id(candidate) else None
