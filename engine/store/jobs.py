"""Store queries about jobs: persisted actions, found again by their idempotency key."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from .base import QueryBase
from .errors import Conflict, NotFound
from .mapping import check_fields, from_row, json_param, translated
from .rows import Job, JobStatus

_INSERT = (
    "INSERT INTO jobs (id, action, target_kind, target_id, idempotency_key, created, updated)"
    " VALUES (%(id)s, %(action)s, %(target_kind)s, %(target_id)s, %(key)s, %(now)s, %(now)s)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *"
)

_LIST = (
    "SELECT * FROM jobs"
    " WHERE (%(status)s::text IS NULL OR status = %(status)s)"
    " AND (%(target)s::uuid IS NULL OR target_id = %(target)s)"
    " ORDER BY created DESC, id LIMIT %(limit)s"
)


def job_from_row(row: dict[str, Any]) -> Job:
    """A :class:`Job` from a ``jobs`` row."""
    return from_row(Job, row, convert={"status": JobStatus})


class JobQueries(QueryBase):
    """Jobs: every action the engine carries out, with its progress and outcome."""

    async def create_job(
        self,
        action: str,
        *,
        target_kind: str,
        target_id: UUID | None = None,
        idempotency_key: str | None = None,
        job_id: UUID | None = None,
    ) -> tuple[Job, bool]:
        """Create a ``pending`` job, or find the one created earlier with the same key.

        Two concurrent requests with one key get one job: the second waits for the first's
        transaction, then finds its job.

        :returns: ``(job, created)``; ``created`` is False when the key found an existing job,
            which the caller must not start again.
        :raises Conflict: the key belongs to a job for another action or target.
        """
        params = {
            "id": job_id or uuid.uuid4(),
            "action": action,
            "target_kind": target_kind,
            "target_id": target_id,
            "key": idempotency_key,
            "now": self.now,
        }
        with translated(params=params):
            row = await self._sql.fetch_one(_INSERT, params)
        if row is not None:
            return job_from_row(row), True
        row = await self._sql.fetch_one(
            "SELECT * FROM jobs WHERE idempotency_key = %(key)s", params
        )
        assert row is not None  # DO NOTHING happened because this row exists
        job = job_from_row(row)
        if (job.action, job.target_kind, job.target_id) != (action, target_kind, target_id):
            raise Conflict(
                f"idempotency key {idempotency_key!r} is job {job.id} ({job.action} of "
                f"{job.target_kind} {job.target_id})"
            )
        return job, False

    async def get_job(self, job_id: UUID) -> Job:
        """The job with this id.

        :raises NotFound: no such job.
        """
        row = await self._sql.fetch_one("SELECT * FROM jobs WHERE id = %(id)s", {"id": job_id})
        if row is None:
            raise NotFound("job", job_id)
        return job_from_row(row)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        target_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """The newest jobs matching every filter given, newest first."""
        params = {
            "status": status.value if status else None,
            "target": target_id,
            "limit": limit,
        }
        rows = await self._sql.fetch_all(_LIST, params)
        return [job_from_row(row) for row in rows]

    async def update_job(self, job_id: UUID, **changes: Any) -> Job:
        """Change a job's ``status``, ``progress``, ``result`` or ``error``.

        :raises NotFound: no such job.
        :raises Conflict: the job already succeeded or failed (final states never change).
        :raises InvalidValue: progress outside 0..100, an unknown status.
        :raises TypeError: a field that does not exist or cannot change.
        """
        check_fields(
            Job, changes, fixed=("id", "action", "target_kind", "target_id", "idempotency_key",
                                 "created", "updated")
        )
        row = await self._sql.fetch_one(
            "SELECT status FROM jobs WHERE id = %(id)s FOR UPDATE", {"id": job_id}
        )
        if row is None:
            raise NotFound("job", job_id)
        if JobStatus(row["status"]).final:
            raise Conflict(f"job {job_id} is already {row['status']}")
        if "result" in changes:  # any JSON value, a bare string or number included
            changes["result"] = json_param(changes["result"])
        await self._update("job", "jobs", "id", job_id, changes)
        return await self.get_job(job_id)

