"""``JobRunner``: every action as a persisted, idempotent job, one at a time per target.

An action (start a VM, put a host into maintenance, ...) is submitted with two coroutines:

- ``prepare()`` checks that the action makes sense and decides (the scheduler's placement,
  reserving its resources); it raises ``ActionRefused`` (or a store error) to refuse, and then
  no job is written. It may return an ``undo`` with its context, called if no job follows.
- ``run(job, context, progress)`` carries the action out; what it returns is the job's result,
  and what it raises (``JobFailed`` with a clear reason, or anything) fails the job.

The runner holds a lock per target (VM or host id) from before ``prepare`` until ``run`` ends:
a second action on a busy target is refused with :class:`~engine.errors.ActionInProgress`, which
names the job holding it. A request with an ``idempotency_key`` already used for the target finds
that job again (running or finished) instead of acting twice.

Each job's creation, progress and outcome are written to the store and published (``job``); a
failure is also an audit event (``JOB_FAILED``). Jobs left unfinished by an engine that stopped
are failed at the next start (:meth:`JobRunner.recover`): the state of their targets converges
through monitoring, not by replaying half-done actions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import Logger

from .errors import ActionInProgress
from .events import Auditor, LiveEvents
from .interfaces import IStore
from .store.auditlog import AuditType, audit_event
from .store.errors import Conflict, StoreError
from .store.rows import Job, JobStatus

Progress = Callable[[int], Awaitable[None]]


class JobFailed(Exception):
    """A job's action failed for a reason the admin should read (no traceback is logged)."""


@dataclass
class _Held:
    """Who holds a target: an action being prepared (no job yet) or a running job."""

    action: str
    key: str | None
    job_id: UUID | None = None


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` decided: the context ``run`` gets, and how to undo it if no job runs."""

    context: Any = None
    undo: Callable[[], object] | None = None


class JobRunner:
    """
    Runs actions as jobs (see the module docstring).

    :param store: where jobs are kept.
    :param live: where job changes are published.
    :param auditor: records failures.
    """

    log = Logger()

    def __init__(self, store: IStore, live: LiveEvents, auditor: Auditor) -> None:
        self._store = store
        self._live = live
        self._auditor = auditor
        self._held: dict[UUID, _Held] = {}
        self._running: dict[UUID, Deferred] = {}
        self._finished: dict[UUID, list[Deferred]] = {}
        self._stopping = False

    def holder(self, target_id: UUID) -> UUID | None:
        """:returns: the id of the job holding ``target_id`` (None: free, or preparing)."""
        held = self._held.get(target_id)
        return None if held is None else held.job_id

    def busy(self, target_id: UUID) -> bool:
        """:returns: whether an action holds ``target_id``."""
        return target_id in self._held

    async def submit(
        self,
        action: str,
        *,
        target_kind: str,
        target_id: UUID,
        label: str,
        key: str | None,
        prepare: Callable[[], Awaitable[Prepared]],
        run: Callable[[Job, Any, Progress], Awaitable[Any]],
    ) -> Job:
        """
        Prepare and start an action as a job.

        :param label: names the target in messages, e.g. ``"VM 'web1'"``.
        :returns: the running job (or the job an idempotency key found).
        :raises ActionInProgress: another action holds the target.
        :raises Conflict: the key belongs to another action or target.
        :raises: whatever ``prepare`` raised (nothing is written then).
        """
        held = self._held.get(target_id)
        if held is not None:
            return await self._busy(held, action, target_id, label, key)
        held = self._held[target_id] = _Held(action, key)
        try:
            found = await self._find(action, target_id, key)
            if found is not None:
                self._held.pop(target_id, None)
                return found
            prepared = await prepare()
        except BaseException:
            self._held.pop(target_id, None)
            raise
        try:
            job = await self._create(action, target_kind, target_id, key)
        except BaseException:
            self._held.pop(target_id, None)
            if prepared.undo is not None:
                prepared.undo()
            raise
        held.job_id = job.id
        self._live.publish("job", job)
        done = Deferred.fromCoroutine(self._execute(job, target_kind, prepared, run))
        if not done.called:
            self._running[job.id] = done
            done.addBoth(self._forget, job.id)
        return job

    def _forget(self, result: Any, job_id: UUID) -> Any:
        self._running.pop(job_id, None)
        return result

    async def _busy(
        self, held: _Held, action: str, target_id: UUID, label: str, key: str | None
    ) -> Job:
        if key is not None and key == held.key and held.job_id is not None:
            return await self._store.get_job(held.job_id)
        found = await self._find(action, target_id, key)
        if found is not None:
            return found
        what = f"job {held.job_id}" if held.job_id else "an action being prepared"
        raise ActionInProgress(
            f"{label} is busy: {held.action} ({what}) is in progress; try again when it ends",
            held.job_id,
        )

    async def _find(self, action: str, target_id: UUID, key: str | None) -> Job | None:
        """The job an idempotency key names for this target, if any."""
        if key is None:
            return None
        for job in await self._store.list_jobs(target_id=target_id, limit=1000):
            if job.idempotency_key == key:
                if job.action != action:
                    raise Conflict(
                        f"idempotency key {key!r} is job {job.id} ({job.action}), not {action}"
                    )
                return job
        return None

    async def _create(self, action: str, kind: str, target_id: UUID, key: str | None) -> Job:
        async def create(tx: Any) -> Job:
            job, created = await tx.create_job(
                action, target_kind=kind, target_id=target_id, idempotency_key=key
            )
            if not created:  # the key is another target's
                raise Conflict(f"idempotency key {key!r} is job {job.id} ({job.action})")
            return await tx.update_job(job.id, status=JobStatus.RUNNING)

        return await self._store.transaction(create)

    async def _execute(self, job: Job, kind: str, prepared: Prepared, run: Any) -> None:
        async def progress(percent: int) -> None:
            await self._update(job.id, progress=percent)

        try:
            result = await run(job, prepared.context, progress)
        except BaseException as e:  # the job records every failure, cancellation included
            error = self._describe(job, e)
            self._release(job)
            await self._finish(job, kind, status=JobStatus.FAILED, error=error)
        else:
            self._release(job)
            await self._finish(job, kind, status=JobStatus.SUCCEEDED, progress=100,
                               result=result)

    def _describe(self, job: Job, error: BaseException) -> str:
        if isinstance(error, CancelledError):
            return "interrupted: the engine is stopping"
        if self._stopping and "interrupted" not in str(error):
            return f"interrupted: the engine is stopping ({error})"
        if isinstance(error, JobFailed | StoreError):
            return str(error)
        self.log.failure("job {action} {job_id} failed", job_id=job.id, action=job.action)
        return f"{type(error).__name__}: {error}"

    def _release(self, job: Job) -> None:
        if job.target_id is not None:
            held = self._held.get(job.target_id)
            if held is not None and held.job_id == job.id:
                del self._held[job.target_id]

    async def _finish(self, job: Job, kind: str, **changes: Any) -> None:
        event = None
        if changes["status"] is JobStatus.FAILED:
            ids = {"vm_id" if kind == "vm" else "host_id": job.target_id}
            event = audit_event(AuditType.JOB_FAILED, job_id=job.id, action=job.action,
                                reason=changes["error"], **ids)

        async def write(tx: Any) -> tuple[Job, Any]:
            row = await tx.update_job(job.id, **changes)
            return row, (await tx.add_event(event) if event is not None else None)

        try:
            row, recorded = await self._store.transaction(write)
        except Exception as e:
            self.log.warn("job {job_id} outcome not recorded: {error}", job_id=job.id, error=e)
            row, recorded = None, None
        if recorded is not None:
            self._auditor.published(recorded)
        if row is not None:
            self._live.publish("job", row)
        for waiter in self._finished.pop(job.id, []):
            waiter.callback(row)

    async def _update(self, job_id: UUID, **changes: Any) -> None:
        try:
            row = await self._store.update_job(job_id, **changes)
        except StoreError as e:
            self.log.warn("job {job_id} progress not recorded: {error}", job_id=job_id, error=e)
            return
        self._live.publish("job", row)

    def finished(self, job_id: UUID) -> Deferred:
        """
        :returns: a Deferred firing with the finished ``Job`` (None if its outcome could not be
            written) once the job ends; at once with the stored job if it is not running here.
        """
        if job_id not in self._running:
            return self._store.get_job(job_id)
        waiter: Deferred = Deferred()
        self._finished.setdefault(job_id, []).append(waiter)
        return waiter

    async def recover(self) -> int:
        """
        Fail the jobs an earlier engine left pending or running.

        :returns: how many were failed.
        """
        count = 0
        for status in (JobStatus.PENDING, JobStatus.RUNNING):
            for job in await self._store.list_jobs(status=status, limit=10_000):
                if job.id in self._running:
                    continue
                await self._store.update_job(
                    job.id, status=JobStatus.FAILED,
                    error="interrupted by an engine restart; the state converges by monitoring",
                )
                count += 1
        return count

    def stopping(self) -> None:
        """The engine is stopping: jobs that fail from now on say they were interrupted."""
        self._stopping = True

    async def stop(self, clock: Any, timeout: float = 10.0) -> None:
        """
        Wait until the running jobs have ended and their outcome is written (the engine has
        interrupted their waits and closed their links); after ``timeout`` seconds, cancel
        whatever still runs.
        """
        self._stopping = True
        running = list(self._running.values())
        if not running:
            return
        waited = DeferredList([_shielded(d) for d in running], consumeErrors=True)
        waited.addTimeout(timeout, clock)
        try:
            await waited
        except defer.TimeoutError:
            self.log.warn("{count} jobs still running after {timeout} s: cancelled",
                          count=len(self._running), timeout=timeout)
            for d in list(self._running.values()):
                d.cancel()


def _shielded(d: Deferred) -> Deferred:
    """A Deferred that fires when ``d`` does, and whose cancellation leaves ``d`` alone."""
    mirror: Deferred = Deferred()

    def relay(result: Any) -> Any:
        mirror.callback(None)
        return result

    d.addBoth(relay)
    return mirror
