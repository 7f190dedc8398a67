"""The only place that knows Redis key formats.

Redis Cluster runs a multi-key script only when all its keys hash to one slot. Every job
therefore lives in one of :data:`BUCKETS` buckets (by a CRC32 of its id), and each bucket
has its own indexes (deadlines, timers, jobs, escalations, agents' claimed steps). All keys
of a job and of its bucket share the hash tag ``{b<N>}``, so every state script touches one
slot. Fleet-wide keys (agents, schedules) share their own tags. Services that scan an index
(supervisor, scheduler timers, the CLI) read all buckets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Part of the key layout, like Redis Cluster's 16,384 slots: changing it strands every
# job already stored. 32 buckets spread over up to 32 cluster primaries.
BUCKETS = 32


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one fleet prefix."""

    prefix: str

    @staticmethod
    def bucket_of(job_id: str) -> int:
        """The bucket a job's keys live in (stable across processes and releases)."""
        return zlib.crc32(job_id.encode()) % BUCKETS

    @property
    def buckets(self) -> range:
        return range(BUCKETS)

    def _tag(self, bucket: int) -> str:
        return f"{self.prefix}:{{b{bucket}}}"

    def _of(self, job_id: str) -> str:
        return self._tag(self.bucket_of(job_id))

    # --- one job ---

    def job(self, job_id: str) -> str:
        return f"{self._of(job_id)}:job:{job_id}"

    def step(self, job_id: str, index: int) -> str:
        return f"{self.step_prefix(job_id)}{index}"

    def step_prefix(self, job_id: str) -> str:
        return f"{self._of(job_id)}:step:{job_id}:"

    def history(self, job_id: str) -> str:
        return f"{self._of(job_id)}:history:{job_id}"

    def cancel_marker(self, job_id: str) -> str:
        """Set when a job is cancelled before its submission was recorded."""
        return f"{self._of(job_id)}:cancel:{job_id}"

    # --- one bucket's indexes (``bucket``: from :meth:`bucket_of`) ---

    def deadlines(self, bucket: int) -> str:
        """Sorted set: member ``job_id|step``, score = when the step needs attention (ms)."""
        return f"{self._tag(bucket)}:deadlines"

    def timers(self, bucket: int) -> str:
        """Sorted set: member ``job_id|step``, score = when a retry or delayed start is due."""
        return f"{self._tag(bucket)}:timers"

    def escalations(self, bucket: int) -> str:
        """Sorted set of escalated job ids a supervisor has yet to report (score: when)."""
        return f"{self._tag(bucket)}:escalations"

    def jobs(self, bucket: int) -> str:
        """Sorted set of job ids by creation time (ms)."""
        return f"{self._tag(bucket)}:jobs"

    def agent_steps(self, agent_id: str, bucket: int) -> str:
        """Set of ``job_id|step`` (of this bucket) an agent claimed and has not recorded."""
        return f"{self._tag(bucket)}:agent-steps:{agent_id}"

    def step_key_format(self, bucket: int) -> tuple[str, str]:
        """A step key of this bucket is ``a + job_id + b + index`` (for scripts that loop
        over steps)."""
        return f"{self._tag(bucket)}:step:", ":"

    # --- fleet-wide ---

    @property
    def schedules(self) -> str:
        """Hash: schedule name -> its definition (JSON)."""
        return f"{self.prefix}:{{cron}}:schedules"

    @property
    def cron(self) -> str:
        """Sorted set: schedule name, score = its next tick (ms)."""
        return f"{self.prefix}:{{cron}}:cron"

    @property
    def agents(self) -> str:
        """Sorted set of agent ids by last heartbeat (ms)."""
        return f"{self.prefix}:{{agents}}:agents"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}:{{agents}}:agent:{agent_id}"

    @property
    def notify_prefix(self) -> str:
        """Redis pub/sub channels of submitters waiting for their jobs' ends."""
        return f"{self.prefix}:notify:"

    def pattern(self) -> str:
        """Glob matching every key of this fleet (for test clean-up)."""
        return f"{self.prefix}:*"


def deadline_member(job_id: str, step: int) -> str:
    return f"{job_id}|{step}"


def parse_deadline_member(member: str) -> tuple[str, int]:
    job_id, _, step = member.rpartition("|")
    return job_id, int(step)
