"""Store queries about the audit log."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID

from .auditlog import AuditEvent, NewAuditEvent, Severity
from .base import QueryBase
from .mapping import adapt, from_row, translated

_INSERT = (
    "INSERT INTO audit_log (time, type, severity, message, host_id, vm_id, job_id, details)"
    " VALUES (%(time)s, %(type)s, %(severity)s, %(message)s, %(host_id)s, %(vm_id)s,"
    " %(job_id)s, %(details)s) RETURNING *"
)

_LIST = (
    "SELECT * FROM audit_log"
    " WHERE (%(since)s::bigint IS NULL OR id > %(since)s)"
    " AND (%(before)s::bigint IS NULL OR id < %(before)s)"
    " AND (%(severities)s::text[] IS NULL OR severity = ANY(%(severities)s))"
    " AND (%(host)s::uuid IS NULL OR host_id = %(host)s)"
    " AND (%(vm)s::uuid IS NULL OR vm_id = %(vm)s)"
    " AND (%(job)s::uuid IS NULL OR job_id = %(job)s)"
    " AND (%(type)s::text IS NULL OR type = %(type)s)"
    " ORDER BY id DESC LIMIT %(limit)s"
)


def event_from_row(row: dict[str, Any]) -> AuditEvent:
    """An :class:`AuditEvent` from an ``audit_log`` row."""
    return from_row(AuditEvent, row, convert={"severity": Severity})


class EventQueries(QueryBase):
    """The audit log: typed events with severities, newest first."""

    async def add_event(self, event: NewAuditEvent) -> AuditEvent:
        """Record ``event`` at the transaction's time.

        :returns: the recorded event, with its ``id`` and ``time``.
        """
        params = {k: adapt(v) for k, v in dataclasses.asdict(event).items()}
        params["time"] = self.now
        with translated(params=params):
            row = await self._sql.fetch_one(_INSERT, params)
        assert row is not None
        return event_from_row(row)

    async def list_events(
        self,
        *,
        since_id: int | None = None,
        before_id: int | None = None,
        min_severity: Severity | None = None,
        host_id: UUID | None = None,
        vm_id: UUID | None = None,
        job_id: UUID | None = None,
        event_type: str | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """The newest events matching every filter given, newest first.

        :param since_id: only events recorded after the one with this id.
        :param before_id: only events recorded before the one with this id (paging back).
        :param min_severity: only events at least this grave.
        :param event_type: only events of this type (an :class:`~engine.store.auditlog.AuditType`
            name).
        :param limit: at most this many.
        """
        params = {
            "since": since_id,
            "before": before_id,
            "severities": [s.value for s in min_severity.at_least()] if min_severity else None,
            "host": host_id,
            "vm": vm_id,
            "job": job_id,
            "type": event_type,
            "limit": limit,
        }
        rows = await self._sql.fetch_all(_LIST, params)
        return [event_from_row(row) for row in rows]

    async def purge_events(self, older_than: datetime) -> int:
        """Delete events recorded before ``older_than`` (oVirt keeps 30 days).

        :returns: how many were deleted.
        """
        return await self._sql.execute(
            "DELETE FROM audit_log WHERE time < %(t)s", {"t": older_than}
        )
