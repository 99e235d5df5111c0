"""MemoryHypervisor: an in-memory :class:`~vdsmlike.interfaces.IHypervisor` for fast tests.

It documents the semantics the core relies on, as the libvirt adapter shows them: transient
domains keyed by lower-case UUID; :class:`DomainExists` for a duplicate UUID or name,
:class:`DomainNotFound` for an unknown id, :class:`HypervisorError` for anything else refused; the
lifecycle events libvirt sends (STARTED/BOOTED, SUSPENDED/PAUSED, RESUMED/UNPAUSED,
SHUTDOWN/FINISHED then STOPPED/SHUTDOWN, STOPPED/DESTROYED, STOPPED/CRASHED, ``"reboot"``).

Events: with a reactor (real or ``Clock``) they are queued and delivered in order by one
``callLater(0, ...)`` — a ``Clock`` delivers them on ``clock.advance(0)``. Without a reactor
(``MemoryHypervisor()``) the hypervisor is *synchronous*: events reach the listener before the
method's Deferred fires, and ``shutdown()`` stops the domain at once.

Tuning: vCPU bandwidth and the block IO limits of the domain's ``<disk>`` elements (by target
dev) are kept per domain and checked with libvirt's rules (:mod:`.tuning`).

Migration (:class:`~vdsmlike.interfaces.ILiveMigration`) is *emulated*, mixed in from
:class:`~.memory_migration.MemoryMigration`. The domain record and its XML are in
:mod:`.memory_domain`.

Test knobs: :meth:`fail_next` (error injection), :meth:`crash`, :meth:`guest_ignores_shutdown`,
:meth:`set_emulated_dirty_rate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from defusedxml import ElementTree
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import IHypervisor, ILiveMigration
from ..vm.migration import MigrationSupport
from .emulated_migrations import EmulatedMigrations
from .errors import DomainExists, DomainNotFound, HypervisorError
from .events import (
    CpuTune,
    DomainEvent,
    DomainInfo,
    DomainState,
    HostInfo,
    LifecycleEvent,
    StoppedDetail,
    SuspendedDetail,
)
from .memory_domain import MemoryDomain, domain_from_xml, live_xml
from .memory_migration import MemoryMigration
from .tuning import apply_cpu_tune, block_io_tune

#: Seconds between ``shutdown()`` and the simulated guest powering off (with a reactor).
SHUTDOWN_DELAY = 0.2

DEFAULT_HOST = HostInfo(
    memory_kib=16 * 1024 * 1024,
    cpus=8,
    sockets=1,
    cores=4,
    threads=2,
    cpu_model="Memory-CPU",
    cpu_mhz=2400,
    cpu_flags=("vmx", "sse4_2", "avx2"),
    hostname="memory-host",
    host_uuid="00000000-0000-4000-8000-00000000c0de",
    emulated_machines=("pc-i440fx-7.2", "pc", "pc-q35-7.2", "q35"),
    kvm=True,
    lib_version=(9, 0, 0),
    hv_version=(7, 2, 0),
    hv_type="MEMORY",
    numa_nodes={0: {"memory_kib": 16 * 1024 * 1024, "cpus": list(range(8))}},
)


@implementer(IHypervisor, ILiveMigration)
class MemoryHypervisor(MemoryMigration):
    """
    A hypervisor whose domains live in a dict.

    :param reactor: delivers events and schedules simulated guest shutdowns; None for the
        synchronous mode described in the module docstring.
    :param host: what :meth:`host_info` reports.
    """

    log = Logger()

    def __init__(self, reactor: Any = None, *, host: HostInfo = DEFAULT_HOST) -> None:
        self.uri = "memory:///"
        self._reactor = reactor
        self._host = host
        self.domains: dict[str, MemoryDomain] = {}
        self._listener: Callable[[DomainEvent], None] | None = None
        self._queue: list[DomainEvent] = []
        self._flush_call: Any = None
        self._failures: dict[str, list[Exception]] = {}
        self._samples = 0
        self._emulations = EmulatedMigrations()
        self.migration_support = MigrationSupport(outgoing=True, incoming=True, emulated=True)

    # -- test knobs

    def fail_next(self, method_name: str, error: Exception) -> None:
        """Make the next call of ``method_name`` (e.g. ``"create"``) fail with ``error``."""
        self._failures.setdefault(method_name, []).append(error)

    def crash(self, vm_id: str) -> None:
        """The guest dies: it is gone, with a STOPPED/CRASHED event."""
        self._remove(self._get(vm_id), StoppedDetail.CRASHED)

    def guest_ignores_shutdown(self, vm_id: str, ignores: bool = True) -> None:
        """Make the guest ignore ACPI shutdown and reboot requests."""
        self._get(vm_id).ignores_shutdown = ignores

    # -- plumbing

    def _now(self) -> float:
        return self._reactor.seconds() if self._reactor is not None else time.monotonic()

    def _emit(self, vm_id: str, kind: LifecycleEvent | str, detail: int = 0) -> None:
        self._queue.append(DomainEvent(vm_id, kind, int(detail)))
        if self._reactor is None:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        queue, self._queue = self._queue, []
        for event in queue:
            if self._listener is None:
                continue
            try:
                self._listener(event)
            except Exception:
                self.log.failure("event listener failed on {event}", event=event)

    def _get(self, vm_id: str) -> MemoryDomain:
        domain = self.domains.get(str(vm_id).lower())
        if domain is None:
            raise DomainNotFound(vm_id)
        return domain

    def _call(self, method: str, fn: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``fn`` unless a failure was injected for ``method``; errors become failures."""
        failures = self._failures.get(method)
        if failures:
            return fail(failures.pop(0))
        try:
            return succeed(fn(*args))
        except HypervisorError:
            return fail()

    def _settle_cpu(self, domain: MemoryDomain) -> None:
        if domain.running_since is not None:
            now = self._now()
            # A guest that is mostly idle: 10 % of each vCPU.
            domain.cpu_ns += int((now - domain.running_since) * 1e8 * domain.vcpus)
            domain.running_since = now

    def _set_state(self, domain: MemoryDomain, state: DomainState, reason: int) -> None:
        self._settle_cpu(domain)
        domain.state, domain.reason = state, reason
        domain.running_since = self._now() if state == DomainState.RUNNING else None

    def _remove(self, domain: MemoryDomain, detail: StoppedDetail) -> None:
        for call in domain.pending:
            if call.active():
                call.cancel()
        # A domain destroyed while it migrates: the migration fails.
        self._emulations.abort(domain.vm_id)
        del self.domains[domain.vm_id]
        self._emit(domain.vm_id, LifecycleEvent.STOPPED, detail)

    def _live_xml(self, domain: MemoryDomain) -> str:
        return live_xml(domain, list(self.domains).index(domain.vm_id) + 1)

    def _info(self, domain: MemoryDomain) -> DomainInfo:
        return DomainInfo(
            domain.vm_id, domain.name, domain.state, domain.reason, self._live_xml(domain)
        )

    # -- IHypervisor

    def open(self) -> Deferred[None]:
        """:returns: a Deferred that has fired with None."""
        return self._call("open", lambda: None)

    def close(self) -> Deferred[None]:
        """Stop delivering events. :returns: a Deferred that has fired with None."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._queue = []
        return self._call("close", lambda: None)

    def set_event_listener(self, listener: Callable[[DomainEvent], None] | None) -> None:
        """Deliver :class:`DomainEvent` objects to ``listener``, in order."""
        self._listener = listener

    def host_info(self) -> Deferred[HostInfo]:
        """:returns: a Deferred firing with the configured :class:`HostInfo`."""
        return self._call("host_info", lambda: self._host)

    def list_domains(self) -> Deferred[list[DomainInfo]]:
        """:returns: a Deferred firing with every domain's :class:`DomainInfo`."""
        return self._call("list_domains", lambda: [self._info(d) for d in self.domains.values()])

    def create(self, xml: str, paused: bool) -> Deferred[DomainInfo]:
        """:returns: a Deferred firing with the new domain's info, or failing as libvirt does."""
        return self._call("create", self._create, xml, paused)

    def _create(self, xml: str, paused: bool) -> DomainInfo:
        domain = self._add(domain_from_xml(xml))
        self._set_state(domain, DomainState.RUNNING, 1)
        self._emit(domain.vm_id, LifecycleEvent.STARTED, 0)
        if paused:
            self._set_state(domain, DomainState.PAUSED, 1)
            self._emit(domain.vm_id, LifecycleEvent.SUSPENDED, SuspendedDetail.PAUSED)
        return self._info(domain)

    def _add(self, domain: MemoryDomain) -> MemoryDomain:
        for other in self.domains.values():
            if other.vm_id == domain.vm_id or other.name == domain.name:
                raise DomainExists(
                    f"operation failed: domain '{other.name}' already exists with uuid "
                    f"{other.vm_id}"
                )
        self.domains[domain.vm_id] = domain
        return domain

    def destroy(self, vm_id: str, graceful: bool) -> Deferred[None]:
        """:returns: a Deferred firing with None; the domain is gone (STOPPED/DESTROYED)."""
        return self._call(
            "destroy", lambda: self._remove(self._get(vm_id), StoppedDetail.DESTROYED)
        )

    def shutdown(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None; the guest powers off shortly after."""
        return self._call("shutdown", self._shutdown, vm_id)

    def _shutdown(self, vm_id: str) -> None:
        domain = self._get(vm_id)
        if domain.ignores_shutdown:
            return
        if self._reactor is None:
            self._power_off(domain)
        else:
            domain.pending.append(self._reactor.callLater(SHUTDOWN_DELAY, self._power_off, domain))

    def _power_off(self, domain: MemoryDomain) -> None:
        if self.domains.get(domain.vm_id) is domain:
            self._emit(domain.vm_id, LifecycleEvent.SHUTDOWN, 0)
            self._remove(domain, StoppedDetail.SHUTDOWN)

    def reboot(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None; a ``"reboot"`` event follows."""

        def reboot() -> None:
            if not self._get(vm_id).ignores_shutdown:
                self._emit(vm_id.lower(), "reboot")

        return self._call("reboot", reboot)

    def reset(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None; a ``"reboot"`` event follows."""
        return self._call("reset", lambda: self._emit(self._get(vm_id).vm_id, "reboot"))

    def suspend(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None once paused (SUSPENDED/PAUSED)."""
        return self._call("suspend", self._suspend, vm_id)

    def _suspend(self, vm_id: str) -> None:
        domain = self._get(vm_id)
        if domain.state != DomainState.PAUSED:
            self._set_state(domain, DomainState.PAUSED, 1)
            self._emit(domain.vm_id, LifecycleEvent.SUSPENDED, SuspendedDetail.PAUSED)

    def resume(self, vm_id: str) -> Deferred[None]:
        """:returns: a Deferred firing with None once running (RESUMED/UNPAUSED)."""
        return self._call("resume", self._resume, vm_id)

    def _resume(self, vm_id: str) -> None:
        domain = self._get(vm_id)
        if domain.state != DomainState.PAUSED:
            raise HypervisorError("Requested operation is not valid: domain is not paused")
        self._set_state(domain, DomainState.RUNNING, 3)
        self._emit(domain.vm_id, LifecycleEvent.RESUMED, 0)

    def set_memory(self, vm_id: str, kib: int) -> Deferred[None]:
        """:returns: a Deferred firing with None, or failing above the maximum memory."""
        return self._call("set_memory", self._set_memory, vm_id, kib)

    def _set_memory(self, vm_id: str, kib: int) -> None:
        domain = self._get(vm_id)
        if not 0 < kib <= domain.max_kib:
            raise HypervisorError(
                "invalid argument: cannot set memory higher than max memory"
                if kib > 0
                else "invalid argument: memory must be positive"
            )
        domain.current_kib = int(kib)

    def get_xml(self, vm_id: str) -> Deferred[str]:
        """:returns: a Deferred firing with the live XML (current memory, our metadata)."""
        return self._call("get_xml", lambda: self._live_xml(self._get(vm_id)))

    def set_metadata(self, vm_id: str, xml: str) -> Deferred[None]:
        """:returns: a Deferred firing with None once our metadata element is replaced."""

        def set_metadata() -> None:
            domain = self._get(vm_id)
            try:
                ElementTree.fromstring(xml)
            except Exception as e:
                raise HypervisorError(f"XML error: {e}") from None
            domain.metadata = xml

        return self._call("set_metadata", set_metadata)

    def attach_device(self, vm_id: str, xml: str) -> Deferred[None]:
        """:returns: a Deferred firing with None (the device is not simulated)."""
        return self._call("attach_device", self._get, vm_id).addCallback(lambda _: None)

    def detach_device(self, vm_id: str, xml: str) -> Deferred[None]:
        """:returns: a Deferred firing with None (the device is not simulated)."""
        return self._call("detach_device", self._get, vm_id).addCallback(lambda _: None)

    def get_cpu_tune(self, vm_id: str) -> Deferred[CpuTune]:
        """:returns: a Deferred firing with the domain's vCPU quota, period and count."""
        return self._call("get_cpu_tune", lambda: self._get(vm_id).cpu_tune)

    def set_cpu_tune(
        self, vm_id: str, quota: int | None = None, period: int | None = None
    ) -> Deferred[None]:
        """:returns: a Deferred firing with None, or failing as libvirt does for a bad value."""

        def set_cpu_tune() -> None:
            domain = self._get(vm_id)
            domain.cpu_tune = apply_cpu_tune(domain.cpu_tune, quota, period)

        return self._call("set_cpu_tune", set_cpu_tune)

    def get_block_io_tune(self, vm_id: str, device: str) -> Deferred[dict[str, int]]:
        """:returns: a Deferred firing with the six limits of disk ``device``."""
        return self._call("get_block_io_tune", lambda: dict(self._disk(vm_id, device)[1]))

    def set_block_io_tune(self, vm_id: str, device: str, values: dict[str, int]) -> Deferred[None]:
        """:returns: a Deferred firing with None, or failing as libvirt does."""

        def set_block_io_tune() -> None:
            domain, _ = self._disk(vm_id, device)
            domain.io_tune[device] = block_io_tune(values)

        return self._call("set_block_io_tune", set_block_io_tune)

    def _disk(self, vm_id: str, device: str) -> tuple[MemoryDomain, dict[str, int]]:
        domain = self._get(vm_id)
        if device not in domain.io_tune:
            raise HypervisorError(f"invalid argument: disk '{device}' not found in domain")
        return domain, domain.io_tune[device]

    def bulk_stats(self) -> Deferred[dict[str, dict[str, Any]]]:
        """:returns: a Deferred firing with synthetic libvirt-keyed stats per domain."""
        return self._call("bulk_stats", self._bulk_stats)

    def _bulk_stats(self) -> dict[str, dict[str, Any]]:
        self._samples += 1
        return {d.vm_id: self._stats(d) for d in self.domains.values()}

    def _stats(self, domain: MemoryDomain) -> dict[str, Any]:
        self._settle_cpu(domain)
        if domain.state == DomainState.RUNNING:
            domain.cpu_ns += 1_000_000  # strictly increasing while running, even on a Clock
        kib = domain.current_kib
        stats: dict[str, Any] = {
            "state.state": domain.state.value,
            "state.reason": domain.reason,
            "cpu.time": domain.cpu_ns,
            "cpu.user": domain.cpu_ns * 7 // 10,
            "cpu.system": domain.cpu_ns * 3 // 10,
            "balloon.current": kib,
            "balloon.maximum": domain.max_kib,
            "balloon.swap_in": 0,
            "balloon.swap_out": 0,
            "balloon.major_fault": 0,
            "balloon.minor_fault": 1000 + self._samples,
            "balloon.unused": kib * 6 // 10,
            "balloon.available": kib * 95 // 100,
            "balloon.usable": kib * 7 // 10,
            "balloon.disk_caches": kib // 20,
            "balloon.rss": kib + 40960,
            "balloon.last-update": int(self._now()),
            "vcpu.current": domain.vcpus,
            "vcpu.maximum": domain.vcpus,
            "net.count": 0,
            "block.count": 0,
        }
        for n in range(domain.vcpus):
            stats[f"vcpu.{n}.state"] = 1
            stats[f"vcpu.{n}.time"] = domain.cpu_ns // domain.vcpus
        return stats
