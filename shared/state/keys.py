"""The only place that knows Redis key formats.

All keys of one job share the hash tag ``{<job_id>}``. Fleet-wide indexes (deadlines,
timers, jobs, agents, escalations) are plain keys that the same scripts touch, so the
scripts are not yet Redis Cluster-ready (see docs/scaling.md for the planned buckets).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one fleet prefix."""

    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:job"

    def step(self, job_id: str, index: int) -> str:
        return f"{self.step_prefix(job_id)}{index}"

    def step_prefix(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:step:"

    def history(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:history"

    def cancel_marker(self, job_id: str) -> str:
        """Set when a job is cancelled before its submission was recorded."""
        return f"{self.prefix}:{{{job_id}}}:cancel"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    @property
    def deadlines(self) -> str:
        """Sorted set: member ``job_id|step``, score = when the step needs attention (ms)."""
        return f"{self.prefix}:deadlines"

    @property
    def timers(self) -> str:
        """Sorted set: member ``job_id|step``, score = when a retry or delayed start is due."""
        return f"{self.prefix}:timers"

    @property
    def escalations(self) -> str:
        """Sorted set of escalated job ids a supervisor has yet to report (score: when)."""
        return f"{self.prefix}:escalations"

    @property
    def schedules(self) -> str:
        """Hash: schedule name -> its definition (JSON)."""
        return f"{self.prefix}:schedules"

    @property
    def cron(self) -> str:
        """Sorted set: schedule name, score = its next tick (ms)."""
        return f"{self.prefix}:cron"

    @property
    def jobs(self) -> str:
        """Sorted set of job ids by creation time (ms)."""
        return f"{self.prefix}:jobs"

    @property
    def agents(self) -> str:
        """Sorted set of agent ids by last heartbeat (ms)."""
        return f"{self.prefix}:agents"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}"

    def agent_steps(self, agent_id: str) -> str:
        """Set of ``job_id|step`` an agent has claimed and not yet recorded."""
        return f"{self.prefix}:agent-steps:{agent_id}"

    def step_key_format(self) -> tuple[str, str]:
        """A step key is ``a + job_id + b + index`` (for scripts that loop over steps)."""
        return f"{self.prefix}:{{", "}:step:"

    def pattern(self) -> str:
        """Glob matching every key of this fleet (for test clean-up)."""
        return f"{self.prefix}:*"


def deadline_member(job_id: str, step: int) -> str:
    return f"{job_id}|{step}"


def parse_deadline_member(member: str) -> tuple[str, int]:
    job_id, _, step = member.rpartition("|")
    return job_id, int(step)
