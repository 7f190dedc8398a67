"""Escalation: a job whose compensation could not finish needs a person. Each one is
logged and, where configured, POSTed to a webhook (at least once, retried until it
answers 2xx)."""

from __future__ import annotations

import asyncio
import logging
import urllib.request

from sasfleet.shared.messages.codec import encode
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.store import StateStore

log = logging.getLogger(__name__)

RETRY_AFTER_MS = 30_000


class Escalations:
    """Reports escalated jobs."""

    def __init__(self, store: StateStore, reader: JobReader, webhook: str, by: str) -> None:
        self.store = store
        self.reader = reader
        self.webhook = webhook
        self.by = by
        self.reported = 0

    async def tick(self) -> bool:
        for job_id in await self.store.claim_escalations(50, RETRY_AFTER_MS):
            view = await self.reader.job(job_id)
            log.error(
                "job %s is ESCALATED and needs a person: %s",
                job_id,
                view.error if view else "(expired)",
                extra={"job_id": job_id},
            )
            if self.webhook and view is not None:
                body = encode(
                    {"event": "job_escalated", "job_id": job_id, "by": self.by, "job": view}
                )
                try:
                    await asyncio.to_thread(_post, self.webhook, body)
                except Exception as exc:
                    log.warning(
                        "escalation webhook failed for %s (%s); retrying in %ds",
                        job_id,
                        exc,
                        RETRY_AFTER_MS // 1000,
                        extra={"job_id": job_id},
                    )
                    continue
            await self.store.escalation_reported(job_id)
            self.reported += 1
        return False


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"HTTP {response.status}")
