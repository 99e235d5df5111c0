"""``PostgresStore``: :class:`~engine.interfaces.IStore` on PostgreSQL through txpostgres.

Each method is one transaction on a pooled connection (:mod:`engine.store.pool`), running the
matching coroutine of :class:`~engine.store.transaction.StoreTransaction`; :meth:`transaction`
runs several in one. Reads are retried after a lost connection even if it died at COMMIT;
writes only when it died before (see the pool).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import IStore
from . import migrations
from .auditlog import NewAuditEvent, Severity
from .base import StoreSettings
from .pool import ReconnectingPool, SqlTransaction
from .rows import (
    HostDynamic,
    HostPowerManagement,
    HostStatic,
    HostStatistics,
    JobStatus,
    VmDynamic,
    VmStatic,
    VmStatistics,
)
from .transaction import StoreTransaction

T = TypeVar("T")


@implementer(IStore)
class PostgresStore:
    """The engine's store on one PostgreSQL database.

    :param dsn: libpq connection string (``PostgresCluster.dsn(...)`` or ``--db``).
    :param reactor: the reactor the connections and the hashing threads use.
    :param clock: the source of every timestamp written (``IReactorTime``); the reactor by
        default, a ``Clock`` in tests.
    :param pool_size: connections, i.e. transactions running at once.
    :param settings: history retention and password hash cost.
    """

    log = Logger()

    def __init__(
        self,
        dsn: str,
        *,
        reactor: Any,
        clock: Any = None,
        pool_size: int = 3,
        settings: StoreSettings | None = None,
    ) -> None:
        self.dsn = dsn
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._settings = settings or StoreSettings()
        self._pool = ReconnectingPool(dsn, reactor=reactor, size=pool_size)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, migrate: bool = True) -> Deferred:
        """Connect, and bring the schema up to date unless ``migrate`` is False.

        :returns: a Deferred firing with the store, or failing with
            :class:`~engine.store.errors.StoreUnavailable` or a
            :class:`~engine.store.errors.MigrationError`.
        """
        return Deferred.fromCoroutine(self._start(migrate))

    async def _start(self, migrate: bool) -> PostgresStore:
        await self._pool.start()
        if migrate:
            applied = await migrations.migrate(self._pool)
            version = await migrations.schema_version(self._pool)
            self.log.info(
                "database schema at version {version} ({count} migrations applied now)",
                version=version,
                count=len(applied),
            )
        return self

    def close(self) -> None:
        """Close every connection; later calls fail."""
        self._pool.close()

    @property
    def pool(self) -> ReconnectingPool:
        """The connection pool (for migrations and tests)."""
        return self._pool

    # -- transactions ------------------------------------------------------------------------

    def transaction(
        self, fn: Callable[[StoreTransaction], Awaitable[T]], *, idempotent: bool = False
    ) -> Deferred:
        """Run ``fn(tx)`` in one transaction: it commits if ``fn`` returns, and rolls back if
        it raises. ``fn`` may be run a second time after a lost connection, so it must act only
        through ``tx``.

        :param idempotent: ``fn`` only reads, or running it twice is harmless: retry even if
            the connection died while committing.
        :returns: a Deferred firing with what ``fn`` returned, failing with what it raised.
        """
        return self._pool.run(lambda sql: fn(self._transaction(sql)), idempotent=idempotent)

    def _transaction(self, sql: SqlTransaction) -> StoreTransaction:
        now = datetime.fromtimestamp(self._clock.seconds(), UTC)
        return StoreTransaction(sql, now=now, settings=self._settings, in_thread=self._in_thread)

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> Deferred:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def _read(self, fn: Callable[[StoreTransaction], Awaitable[T]]) -> Deferred:
        return self.transaction(fn, idempotent=True)

    # -- hosts -------------------------------------------------------------------------------

    def add_host(self, host: HostStatic, *, dynamic: HostDynamic | None = None) -> Deferred:
        return self.transaction(lambda tx: tx.add_host(host, dynamic=dynamic))

    def get_host(self, host_id: UUID) -> Deferred:
        return self._read(lambda tx: tx.get_host(host_id))

    def get_host_by_name(self, name: str) -> Deferred:
        return self._read(lambda tx: tx.get_host_by_name(name))

    def list_hosts(self) -> Deferred:
        return self._read(lambda tx: tx.list_hosts())

    def update_host(self, host_id: UUID, **changes: Any) -> Deferred:
        return self.transaction(lambda tx: tx.update_host(host_id, **changes))

    def remove_host(self, host_id: UUID) -> Deferred:
        return self.transaction(lambda tx: tx.remove_host(host_id))

    def update_host_dynamic(self, host_id: UUID, **changes: Any) -> Deferred:
        return self.transaction(lambda tx: tx.update_host_dynamic(host_id, **changes))

    def record_host_statistics(self, sample: HostStatistics) -> Deferred:
        return self.transaction(lambda tx: tx.record_host_statistics(sample))

    def host_statistics_history(
        self, host_id: UUID, *, since: datetime | None = None, limit: int = 1000
    ) -> Deferred:
        return self._read(lambda tx: tx.host_statistics_history(host_id, since=since, limit=limit))

    def get_power_management(self, host_id: UUID) -> Deferred:
        return self._read(lambda tx: tx.get_power_management(host_id))

    def set_power_management(self, settings: HostPowerManagement) -> Deferred:
        return self.transaction(lambda tx: tx.set_power_management(settings), idempotent=True)

    # -- VMs ---------------------------------------------------------------------------------

    def add_vm(self, vm: VmStatic, *, dynamic: VmDynamic | None = None) -> Deferred:
        return self.transaction(lambda tx: tx.add_vm(vm, dynamic=dynamic))

    def get_vm(self, vm_id: UUID) -> Deferred:
        return self._read(lambda tx: tx.get_vm(vm_id))

    def get_vm_by_name(self, name: str) -> Deferred:
        return self._read(lambda tx: tx.get_vm_by_name(name))

    def list_vms(self, *, host_id: UUID | None = None) -> Deferred:
        return self._read(lambda tx: tx.list_vms(host_id=host_id))

    def update_vm(self, vm_id: UUID, **changes: Any) -> Deferred:
        return self.transaction(lambda tx: tx.update_vm(vm_id, **changes))

    def remove_vm(self, vm_id: UUID) -> Deferred:
        return self.transaction(lambda tx: tx.remove_vm(vm_id))

    def set_vm_dynamic(self, dynamic: VmDynamic, *, force: bool = False) -> Deferred:
        # Idempotent: a replayed conditional write compares notify times again.
        return self.transaction(lambda tx: tx.set_vm_dynamic(dynamic, force=force),
                                idempotent=True)

    def record_vm_statistics(self, samples: Sequence[VmStatistics]) -> Deferred:
        return self.transaction(lambda tx: tx.record_vm_statistics(samples))

    def vm_statistics_history(
        self, vm_id: UUID, *, since: datetime | None = None, limit: int = 1000
    ) -> Deferred:
        return self._read(lambda tx: tx.vm_statistics_history(vm_id, since=since, limit=limit))

    # -- audit log ---------------------------------------------------------------------------

    def add_event(self, event: NewAuditEvent) -> Deferred:
        return self.transaction(lambda tx: tx.add_event(event))

    def list_events(
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
    ) -> Deferred:
        return self._read(
            lambda tx: tx.list_events(
                since_id=since_id, before_id=before_id, min_severity=min_severity,
                host_id=host_id, vm_id=vm_id, job_id=job_id, event_type=event_type, limit=limit,
            )
        )

    def purge_events(self, older_than: datetime) -> Deferred:
        return self.transaction(lambda tx: tx.purge_events(older_than), idempotent=True)

    # -- jobs --------------------------------------------------------------------------------

    def create_job(
        self,
        action: str,
        *,
        target_kind: str,
        target_id: UUID | None = None,
        idempotency_key: str | None = None,
        job_id: UUID | None = None,
    ) -> Deferred:
        return self.transaction(
            lambda tx: tx.create_job(action, target_kind=target_kind, target_id=target_id,
                                     idempotency_key=idempotency_key, job_id=job_id)
        )

    def get_job(self, job_id: UUID) -> Deferred:
        return self._read(lambda tx: tx.get_job(job_id))

    def list_jobs(
        self, *, status: JobStatus | None = None, target_id: UUID | None = None, limit: int = 100
    ) -> Deferred:
        return self._read(lambda tx: tx.list_jobs(status=status, target_id=target_id, limit=limit))

    def update_job(self, job_id: UUID, **changes: Any) -> Deferred:
        return self.transaction(lambda tx: tx.update_job(job_id, **changes))

    # -- affinity groups (engine/store/affinity.py) -----------------------------------------

    def add_affinity_group(self, group: Any) -> Deferred:
        return self.transaction(lambda tx: tx.add_affinity_group(group))

    def get_affinity_group(self, group_id: UUID) -> Deferred:
        return self._read(lambda tx: tx.get_affinity_group(group_id))

    def list_affinity_groups(self) -> Deferred:
        return self._read(lambda tx: tx.list_affinity_groups())

    def update_affinity_group(self, group_id: UUID, **changes: Any) -> Deferred:
        return self.transaction(lambda tx: tx.update_affinity_group(group_id, **changes))

    def remove_affinity_group(self, group_id: UUID) -> Deferred:
        return self.transaction(lambda tx: tx.remove_affinity_group(group_id))

    # -- users and sessions ------------------------------------------------------------------

    def create_user(self, name: str, password: str) -> Deferred:
        return self.transaction(lambda tx: tx.create_user(name, password))

    def verify_password(self, name: str, password: str) -> Deferred:
        return self._read(lambda tx: tx.verify_password(name, password))

    def set_password(self, name: str, password: str) -> Deferred:
        return self.transaction(lambda tx: tx.set_password(name, password), idempotent=True)

    def create_session(self, user_name: str, *, ttl: float) -> Deferred:
        return self.transaction(lambda tx: tx.create_session(user_name, ttl=ttl))

    def lookup_session(self, token: str) -> Deferred:
        return self._read(lambda tx: tx.lookup_session(token))

    def expire_session(self, token: str) -> Deferred:
        return self.transaction(lambda tx: tx.expire_session(token), idempotent=True)

    def purge_sessions(self) -> Deferred:
        return self.transaction(lambda tx: tx.purge_sessions(), idempotent=True)
