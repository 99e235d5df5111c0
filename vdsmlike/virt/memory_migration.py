"""Emulated live migration for :class:`~vdsmlike.virt.memory.MemoryHypervisor` (``ILiveMigration``).

The in-memory twin cannot move bytes, so it emulates (:mod:`vdsmlike.vm.migration_emulation`,
kept in :mod:`.emulated_migrations`): ``migrate`` imagines the transfer on the reactor's clock
(at once without a reactor), then removes the domain with STOPPED/MIGRATED; the destination's
``prepare_incoming`` defines the domain paused with STARTED/MIGRATED and ``finish_incoming``
resumes it with RESUMED/MIGRATED, as QEMU reports an incoming migration. Errors are libvirt's:
a second migration of a VM, or an abort with nothing running, is refused.

:class:`MemoryMigration` is a mixin: ``MemoryHypervisor`` inherits it and provides the domains,
the event queue and the failure injection it declares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from ..vm.migration import JobStats, MigrationRequest
from .emulated_migrations import NO_JOB_MESSAGE, EmulatedMigrations
from .errors import HypervisorError
from .events import DomainInfo, DomainState, LifecycleEvent, StoppedDetail
from .memory_domain import MemoryDomain, domain_from_xml

# libvirt's event details for the two ends of a migration (virDomainEventStartedDetailType and
# virDomainEventResumedDetailType).
STARTED_MIGRATED = 1
RESUMED_MIGRATED = 1


class MemoryMigration:
    """The ``ILiveMigration`` methods of :class:`~vdsmlike.virt.memory.MemoryHypervisor`."""

    # What the hypervisor provides (see vdsmlike.virt.memory).
    domains: dict[str, MemoryDomain]
    _reactor: Any
    _emulations: EmulatedMigrations
    _call: Callable[..., Deferred]
    _get: Callable[[str], MemoryDomain]
    _add: Callable[[MemoryDomain], MemoryDomain]
    _remove: Callable[[MemoryDomain, StoppedDetail], None]
    _set_state: Callable[[MemoryDomain, DomainState, int], None]
    _emit: Callable[..., None]
    _info: Callable[[MemoryDomain], DomainInfo]
    _live_xml: Callable[[MemoryDomain], str]

    def set_emulated_dirty_rate(self, vm_id: str, bytes_per_s: float) -> None:
        """How fast the guest dirties memory while it migrates (0 by default)."""
        self._emulations.set_dirty_rate(str(vm_id).lower(), bytes_per_s)

    def migratable_xml(self, vm_id: str) -> Deferred[str]:
        """:returns: a Deferred firing with the live XML (there is nothing host-specific)."""
        return self._call("migratable_xml", lambda: self._live_xml(self._get(vm_id)))

    def migrate(self, vm_id: str, request: MigrationRequest) -> Deferred[None]:
        """:returns: a Deferred firing with None once the emulated transfer ended and the domain
        is gone (STOPPED/MIGRATED); failing with ``HypervisorError`` when aborted."""
        d = self._call("migrate", self._start_migration, vm_id, request)
        return d.addCallback(lambda running: running.done)

    def _start_migration(self, vm_id: str, request: MigrationRequest) -> Any:
        domain = self._get(vm_id)
        self._emulations.refuse_second(domain.vm_id)
        return self._emulations.start(
            domain.vm_id,
            domain.max_kib * 1024,
            request,
            lambda: self._depart(domain),
            self._reactor,
        )

    def _depart(self, domain: MemoryDomain) -> None:
        if self.domains.get(domain.vm_id) is not domain:
            raise HypervisorError("domain is not running")
        self._remove(domain, StoppedDetail.MIGRATED)

    def job_stats(self, vm_id: str) -> Deferred[JobStats | None]:
        """:returns: a Deferred firing with the emulated job's statistics, or None."""
        return self._call("job_stats", lambda: self._emulations.stats(self._get(vm_id).vm_id))

    def abort_job(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None; the migration's Deferred fails."""

        def abort_job() -> None:
            if not self._emulations.abort(self._get(vm_id).vm_id):
                raise HypervisorError(NO_JOB_MESSAGE)

        return self._call("abort_job", abort_job)

    def set_migration_speed(self, vm_id: str, mib_per_s: int) -> Deferred[None]:
        """:returns: a Deferred firing with None; the bandwidth applies now or next time."""
        return self._call("set_migration_speed", self._setting, vm_id, "speed", mib_per_s)

    def set_migration_downtime(self, vm_id: str, ms: int) -> Deferred[None]:
        """:returns: a Deferred firing with None; the downtime applies now or next time."""
        return self._call("set_migration_downtime", self._setting, vm_id, "downtime", ms)

    def _setting(self, vm_id: str, name: str, value: int) -> None:
        self._emulations.apply(self._get(vm_id).vm_id, name, value)

    def prepare_incoming(self, xml: str) -> Deferred[None]:
        """:returns: a Deferred firing with None once the domain is defined, paused."""
        return self._call("prepare_incoming", self._prepare_incoming, xml)

    def _prepare_incoming(self, xml: str) -> None:
        domain = self._add(domain_from_xml(xml))
        self._set_state(domain, DomainState.PAUSED, 5)  # VIR_DOMAIN_PAUSED_MIGRATION
        self._emit(domain.vm_id, LifecycleEvent.STARTED, STARTED_MIGRATED)

    def finish_incoming(self, vm_id: str) -> Deferred[DomainInfo]:
        """:returns: a Deferred firing with the domain, resumed (RESUMED/MIGRATED)."""

        def finish_incoming() -> DomainInfo:
            domain = self._get(vm_id)
            if domain.state == DomainState.PAUSED:
                self._set_state(domain, DomainState.RUNNING, 2)  # VIR_DOMAIN_RUNNING_MIGRATED
                self._emit(domain.vm_id, LifecycleEvent.RESUMED, RESUMED_MIGRATED)
            return self._info(domain)

        return self._call("finish_incoming", finish_incoming)
