"""Live migration for :class:`~vdsmlike.virt.libvirt.LibvirtHypervisor` (``ILiveMigration``).

Real migration is peer-to-peer from this daemon to the destination's (``migrateToURI3`` with
``VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER``; :func:`migration_flags` and
:func:`migration_params` read a :class:`MigrationRequest`), on its own runner key so that job
statistics (:func:`job_stats_from`), abort and speed or downtime changes for the same VM are
not queued behind it. An embedded driver can send but not receive (no daemon for the source to
talk to).

The test driver cannot migrate at all, so on ``test:`` URIs (and only there) the adapter
*emulates* it (:mod:`vdsmlike.vm.migration_emulation`, kept in :mod:`.emulated_migrations`):
the source's domain is destroyed once the imagined transfer ends and the destination's is
created paused and resumed, and the test driver's events for them are rewritten to what QEMU
sends (STOPPED/MIGRATED, STARTED/MIGRATED, RESUMED/MIGRATED; the pause is not reported) by
:class:`EventRewrites`, which the event thread consults.

:class:`LibvirtMigration` is a mixin: ``LibvirtHypervisor`` inherits it and provides the
connection, the runner and the domain helpers it declares.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from ..interfaces import IBlockingRunner
from ..vm.migration import JobStats, MigrationRequest, MigrationSupport
from .emulated_migrations import NO_JOB_MESSAGE, EmulatedMigrations
from .errors import DomainNotFound, HypervisorError
from .events import DomainInfo, LifecycleEvent
from .libvirt_convert import translate, xml_uuid


def migration_flags(request: MigrationRequest) -> int:
    """The ``virDomainMigrateFlags`` of a live peer-to-peer migration ``request`` asks for."""
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
    for wanted, flag in (
        (request.auto_converge, libvirt.VIR_MIGRATE_AUTO_CONVERGE),
        (request.compressed, libvirt.VIR_MIGRATE_COMPRESSED),
        (request.tunneled, libvirt.VIR_MIGRATE_TUNNELLED),
        (request.encrypted, libvirt.VIR_MIGRATE_TLS),
        (request.abort_on_error, libvirt.VIR_MIGRATE_ABORT_ON_ERROR),
        (request.parallel_connections > 0, libvirt.VIR_MIGRATE_PARALLEL),
        (request.zerocopy, getattr(libvirt, "VIR_MIGRATE_ZEROCOPY", 0)),
    ):
        if wanted:
            flags |= flag
    return flags


def migration_params(request: MigrationRequest) -> dict[str, Any]:
    """The typed parameters of ``migrateToURI3`` for ``request``."""
    params: dict[str, Any] = {}
    if not request.tunneled:  # a tunnelled migration goes through the daemons' own connection
        if request.migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = request.migrate_uri
        if request.listen_address:
            params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = request.listen_address
    if request.dest_xml:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = request.dest_xml
    if request.bandwidth:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = request.bandwidth
    if request.parallel_connections:
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = request.parallel_connections
    return params


def job_stats_from(stats: dict[str, Any]) -> JobStats | None:
    """:returns: libvirt's ``jobStats()`` as :class:`JobStats`, or None when no job runs."""
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    total = int(stats.get("data_total", stats.get("memory_total", 0)))
    remaining = int(stats.get("data_remaining", stats.get("memory_remaining", total)))
    downtime = stats.get("downtime")
    return JobStats(
        iteration=int(stats.get("memory_iteration", 1) or 1),
        data_total=total,
        data_processed=int(stats.get("data_processed", max(total - remaining, 0))),
        data_remaining=remaining,
        elapsed_ms=int(stats.get("time_elapsed", 0)),
        downtime=int(downtime) if downtime is not None else None,
    )


class EventRewrites:
    """
    Lifecycle event details to report instead of libvirt's, by VM id and event kind; each rule
    applies once. Thread-safe: rules are added in the reactor and runner threads and applied
    in libvirt's event thread.
    """

    #: A rule's "do not report this event".
    DROP = -1

    def __init__(self) -> None:
        self._rules: dict[str, dict[LifecycleEvent, int]] = {}
        self._lock = threading.Lock()

    def add(self, vm_id: str, rules: dict[LifecycleEvent, int]) -> None:
        """Rewrite the next event of each kind in ``rules`` for ``vm_id``."""
        with self._lock:
            self._rules.setdefault(vm_id.lower(), {}).update(rules)

    def forget(self, vm_id: str) -> None:
        """Drop ``vm_id``'s rules (the operation they were for failed)."""
        with self._lock:
            self._rules.pop(vm_id.lower(), None)

    def apply(self, vm_id: str, kind: LifecycleEvent, detail: int) -> int:
        """:returns: the detail to report for an event of lower-case ``vm_id``: as libvirt
        said, or as a rule rewrites it (:data:`DROP`: do not report it)."""
        with self._lock:
            rules = self._rules.get(vm_id)
            if not rules or kind not in rules:
                return detail
            new = rules.pop(kind)
            if not rules:
                del self._rules[vm_id]
            return new


class LibvirtMigration:
    """The ``ILiveMigration`` methods of :class:`~vdsmlike.virt.libvirt.LibvirtHypervisor`."""

    # What the hypervisor provides (see vdsmlike.virt.libvirt).
    log: Logger
    uri: str
    _is_test: bool
    _reactor: Any
    _runner: IBlockingRunner
    _emulations: EmulatedMigrations
    _rewrites: EventRewrites
    _lookup: Callable[[str], libvirt.virDomain]
    _on_domain: Callable[..., Deferred]
    _none: Callable[[Deferred], Deferred[None]]
    _domain_info: Callable[[libvirt.virDomain], DomainInfo | None]
    _create: Callable[[str, bool], DomainInfo]

    @property
    def migration_support(self) -> MigrationSupport:
        """Real peer-to-peer migration; an embedded driver only sends; ``test:`` emulates."""
        if self._is_test:
            return MigrationSupport(outgoing=True, incoming=True, emulated=True)
        embedded = self.uri.startswith("qemu:///embed")
        return MigrationSupport(outgoing=True, incoming=not embedded, emulated=False)

    def migratable_xml(self, vm_id: str) -> Deferred[str]:
        """:returns: a Deferred firing with the domain's migratable XML."""
        flags = 0 if self._is_test else libvirt.VIR_DOMAIN_XML_MIGRATABLE
        return self._on_domain(vm_id, "XMLDesc", flags)

    def migrate(self, vm_id: str, request: MigrationRequest) -> Deferred[None]:
        """:returns: a Deferred firing with None once the domain left for the destination."""
        if self._is_test:
            return self._emulate_migration(vm_id, request)
        return self._runner.run(f"{vm_id.lower()}/migration", self._migrate, vm_id, request)

    def _migrate(self, vm_id: str, request: MigrationRequest) -> None:
        dom = self._lookup(vm_id)
        self.log.info(
            "vm {vm_id}: migrating to {dest} ({uri})",
            vm_id=vm_id,
            dest=request.dest_uri,
            uri=request.migrate_uri,
        )
        try:
            dom.migrateToURI3(request.dest_uri, migration_params(request), migration_flags(request))
        except libvirt.libvirtError as e:
            raise translate(e, vm_id) from None

    def job_stats(self, vm_id: str) -> Deferred[JobStats | None]:
        """:returns: a Deferred firing with the migration job's statistics, or None."""
        if self._is_test:
            running = self._emulations.get(vm_id.lower())
            return self._on_domain(vm_id, "UUIDString").addCallback(
                lambda _: running.stats() if running is not None else None
            )
        return self._on_domain(vm_id, "jobStats", 0).addCallback(job_stats_from)

    def abort_job(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None once the job was told to abort."""
        if self._is_test:
            if not self._emulations.abort(vm_id.lower()):
                return self._on_domain(vm_id, "UUIDString").addCallback(self._no_job)
            return self._none(self._on_domain(vm_id, "UUIDString"))
        return self._none(self._on_domain(vm_id, "abortJob"))

    @staticmethod
    def _no_job(_: Any) -> None:
        raise HypervisorError(NO_JOB_MESSAGE)

    def set_migration_speed(self, vm_id: str, mib_per_s: int) -> Deferred[None]:
        """:returns: a Deferred firing with None once the bandwidth limit is set."""
        if self._is_test:
            return self._emulated_setting(vm_id, "speed", mib_per_s)
        return self._none(self._on_domain(vm_id, "migrateSetMaxSpeed", mib_per_s, 0))

    def set_migration_downtime(self, vm_id: str, ms: int) -> Deferred[None]:
        """:returns: a Deferred firing with None once the allowed downtime is set."""
        if self._is_test:
            return self._emulated_setting(vm_id, "downtime", ms)
        return self._none(self._on_domain(vm_id, "migrateSetMaxDowntime", ms, 0))

    def prepare_incoming(self, xml: str) -> Deferred[None]:
        """:returns: a Deferred firing with None (the emulation defines the domain paused)."""
        if not self._is_test:
            return succeed(None)
        try:
            vm_id = xml_uuid(xml)
        except HypervisorError as e:
            return fail(e)
        if vm_id is None:
            return fail(HypervisorError("an incoming domain needs a <uuid>"))
        self._rewrites.add(
            vm_id,
            {
                LifecycleEvent.STARTED: libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
                LifecycleEvent.SUSPENDED: EventRewrites.DROP,
            },
        )
        d = self._runner.run(vm_id, self._create, xml, True)
        return self._none(d.addErrback(self._forget_rewrites, vm_id))

    def _forget_rewrites(self, failure: Any, vm_id: str) -> Any:
        self._rewrites.forget(vm_id)
        return failure

    def finish_incoming(self, vm_id: str) -> Deferred[DomainInfo]:
        """:returns: a Deferred firing with the received domain's info."""
        return self._runner.run(vm_id, self._finish_incoming, vm_id)

    def _finish_incoming(self, vm_id: str) -> DomainInfo:
        dom = self._lookup(vm_id)
        try:
            if self._is_test and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                self._rewrites.add(
                    vm_id, {LifecycleEvent.RESUMED: libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED}
                )
                dom.resume()
        except libvirt.libvirtError as e:
            raise translate(e, vm_id) from None
        info = self._domain_info(dom)
        if info is None:
            raise DomainNotFound(vm_id)
        return info

    def set_emulated_dirty_rate(self, vm_id: str, bytes_per_s: float) -> None:
        """Test knob of the emulation: how fast the guest dirties memory while migrating."""
        self._emulations.set_dirty_rate(vm_id.lower(), bytes_per_s)

    def _emulated_setting(self, vm_id: str, name: str, value: int) -> Deferred[None]:
        key = vm_id.lower()
        return self._on_domain(vm_id, "UUIDString").addCallback(
            lambda _: self._emulations.apply(key, name, value)
        )

    def _emulate_migration(self, vm_id: str, request: MigrationRequest) -> Deferred[None]:
        key = vm_id.lower()
        try:
            self._emulations.refuse_second(key)
        except HypervisorError as e:
            return fail(e)
        d = self._on_domain(vm_id, "info")
        d.addCallback(lambda info: self._start_emulation(key, info[1] * 1024, request))
        return d

    def _start_emulation(self, key: str, memory: int, request: MigrationRequest) -> Deferred:
        running = self._emulations.start(
            key, memory, request, lambda: self._emulated_departure(key), self._reactor
        )
        return running.done

    def _emulated_departure(self, vm_id: str) -> Deferred[None]:
        """The emulated transfer is over: the domain leaves (STOPPED/MIGRATED, as QEMU's)."""
        self._rewrites.add(
            vm_id, {LifecycleEvent.STOPPED: libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED}
        )
        d = self._on_domain(vm_id, "destroy")
        return self._none(d.addErrback(self._forget_rewrites, vm_id))
