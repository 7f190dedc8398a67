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
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope

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
            with job_scope(job_id):
                await self._report(job_id)
        return False

    async def _report(self, job_id: str) -> None:
        view = await self.reader.job(job_id)
        # The report joins the job's trace (the escalation is the job's error there too).
        span = (
            tracing.job_span(
                "escalate", tracing.job_attributes(job_id), traceparent=view.traceparent or ""
            )
            if view is not None
            else tracing.NO_SPAN
        )
        with span:
            span.error("a compensation could not finish: the job needs a person", None, "Escalated")
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
                    span.event("webhook failed", {"error": str(exc)[:200]})
                    return
            await self.store.escalation_reported(job_id)
            self.reported += 1
            metrics.ESCALATIONS_REPORTED.inc()


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"HTTP {response.status}")
