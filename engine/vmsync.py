"""``VmSync``: carries out what :mod:`engine.decide.reconcile` decides about a host's VMs.

Monitoring hands it a host's reports (a ``VM_status`` event, or a whole ``Host.getAllVmStats``
poll); it builds the engine's view of the VMs concerned, asks the pure reconciler for actions,
and performs them: status changes through :class:`~engine.vmtable.VmTable` (each with its audit
event), external VMs recorded in the store (never destroyed), Down VMs cleared from the host with
``VM.destroy``, pending reservations released once a VM is Up or has failed.

Every report that is not older than what the engine holds also goes to the cluster manager
(:class:`~engine.cluster.ClusterService`) as a fact, after it was applied: a ``VM_status`` event
as ``VmSeen``; a poll as ``VmSeen`` for the VMs it lists Down (with their exit reasons) and one
``HostVms``, the host's VM list **as the rows say after the poll was reconciled**. Stale entries
(older than an event already applied) are thereby dropped: the manager trusts a host's list, and
an old poll must not bring a stopped or crashed VM back to life.

When a VM goes Down by itself, the ``down_observers`` are told.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from . import clusterfacts
from .decide import facts as f
from .decide import reconcile as rc
from .events import Auditor
from .interfaces import IStore
from .store.auditlog import AuditType, NewAuditEvent, audit_event
from .store.errors import DuplicateName, StoreError
from .store.rows import VmDynamic, VmStatic, VmStatus
from .vmtable import VmTable
from .wire import integer

#: VDSM's exit reasons the engine itself causes: the agent has already forgotten the VM.
EXIT_ADMIN_SHUTDOWN = 6
EXIT_USER_SHUTDOWN = 7


#: The states a VM comes Up from when it has just started (rather than recovered, rebooted...).
LAUNCHING = frozenset({VmStatus.WAIT_FOR_LAUNCH, VmStatus.POWERING_UP, VmStatus.DOWN,
                       VmStatus.RESTORING_STATE})


class ReportingHost(Protocol):
    """What :class:`VmSync` needs of the host that reports."""

    @property
    def id(self) -> UUID:
        """The host's id."""

    @property
    def name(self) -> str:
        """The host's name."""

    @property
    def link(self) -> Any:
        """Its ``IHostLink``."""


@dataclass(frozen=True)
class VmDown:
    """
    A VM that went Down without being asked to (for the ``down_observers``).

    :ivar vm_id: the VM.
    :ivar host_id: the host it was on.
    :ivar reason: why, in words.
    :ivar error: True when it died of an error (or was lost), not a clean shutdown.
    """

    vm_id: UUID
    host_id: UUID
    reason: str
    error: bool


def status_event(
    vm: VmStatic, old: VmStatus, new: VmStatus, host: ReportingHost, report: Any
) -> NewAuditEvent:
    """The audit event of a VM's status change (pure)."""
    ids: dict[str, Any] = {"vm_id": vm.id, "host_id": host.id, "vm": vm.name,
                           "host": host.name}
    if new is VmStatus.UP:
        if old is VmStatus.PAUSED:
            return audit_event(AuditType.VM_RESUMED, **ids)
        if old in LAUNCHING:
            return audit_event(AuditType.VM_STARTED, **ids, previous=str(old))
    if new is VmStatus.PAUSED:
        return audit_event(AuditType.VM_PAUSED, **ids)
    if new is VmStatus.DOWN:
        reason = (report.exit_message if report is not None else None) or "Down"
        exit_reason = report.exit_reason if report is not None else None
        if exit_reason == EXIT_ADMIN_SHUTDOWN:
            return audit_event(AuditType.VM_STOPPED, **ids, reason=reason)
        if exit_reason == EXIT_USER_SHUTDOWN:
            return audit_event(AuditType.VM_SHUTDOWN, **ids, reason=reason)
        kind = AuditType.VM_DOWN_ERROR if report is None or report.exit_code else AuditType.VM_DOWN
        return audit_event(kind, **ids, reason=reason, exit_reason=exit_reason)
    if new is VmStatus.UNKNOWN:
        return audit_event(AuditType.VM_UNKNOWN, **ids)
    return audit_event(AuditType.VM_STATUS_CHANGED, **ids, status=str(new), previous=str(old))


class VmSync:
    """
    Applies hosts' VM reports (see the module docstring).

    :param vms: the working copy of every VM.
    :param store: where external VMs are recorded.
    :param auditor: records what this does beyond status changes.
    :param cluster: the cluster manager's service: told every report as facts, and every
        external VM found (``observe``, ``add_vm``).
    """

    log = Logger()

    def __init__(self, vms: VmTable, store: IStore, auditor: Auditor, cluster: Any) -> None:
        self._vms = vms
        self._store = store
        self._auditor = auditor
        self._cluster = cluster
        self._adopting: set[str] = set()
        #: VM id -> host id of starts in flight (``VM.create`` sent or about to be).
        self.starting: dict[UUID, UUID] = {}
        #: Called with a :class:`VmDown`: HA (issue 7) hooks in here.
        self.down_observers: list[Callable[[VmDown], None]] = []

    @property
    def vms(self) -> VmTable:
        """The working copy of every VM."""
        return self._vms

    def host_reports(
        self, host: ReportingHost, reports: Sequence[rc.VmReport], *, complete: bool
    ) -> Deferred:
        """
        Apply a host's reports; the working copy changes before this returns.

        :returns: a Deferred firing once every resulting write and call is done (never failing).
        """
        known = {}
        here = (str(v.id) for v in self._vms.on_host(host.id))
        for vm_id in {*(r.vm_id for r in reports), *here}:
            view = self._vms.known(UUID(vm_id))
            if view is not None:
                known[vm_id] = view
        starting = [str(v) for v, h in self.starting.items() if h == host.id]
        actions = rc.reconcile(str(host.id), reports, known, complete=complete, starting=starting)
        done = gatherResults([self._act(host, a) for a in actions], consumeErrors=True)
        self._cluster.observe(*self._facts(host, reports, known, complete=complete))
        return done

    def _facts(
        self,
        host: ReportingHost,
        reports: Sequence[rc.VmReport],
        known: dict[str, rc.KnownVm],
        *,
        complete: bool,
    ) -> list[f.Fact]:
        """What the manager hears of these reports (see the module docstring)."""
        facts: list[f.Fact] = []
        for report in {r.vm_id: r for r in reports}.values():
            before = known.get(report.vm_id)
            if before is not None and rc.is_stale(report, before):
                continue
            if complete and report.status is not VmStatus.DOWN:
                continue  # in the host's list below
            facts.append(clusterfacts.vm_seen(host.id, report))
        if complete:
            running = [v for v in self._vms.on_host(host.id)
                       if v.dynamic.run_on_host == host.id]  # fmt: skip
            facts.append(clusterfacts.host_vms(host.id, running))
        return facts

    def _act(self, host: ReportingHost, action: rc.Action) -> Deferred:
        if isinstance(action, rc.ApplyStatus):
            return self._apply(host, action)
        if isinstance(action, rc.MarkMissing):
            return self.mark_down(UUID(action.vm_id), host, action.reason)
        if isinstance(action, rc.RecordExternal):
            return Deferred.fromCoroutine(self._adopt(host, action))
        return self._clear(host, action)

    def _apply(self, host: ReportingHost, action: rc.ApplyStatus) -> Deferred:
        vm_id, report = UUID(action.vm_id), action.report
        vm = self._vms.get(vm_id)
        assert vm is not None
        down = report.status is VmStatus.DOWN
        leaving = report.status is VmStatus.MIGRATING_FROM
        migrating = vm.dynamic.migrating_to_host if leaving else None
        dynamic = VmDynamic(
            vm_id=vm_id,
            status=report.status,
            run_on_host=None if down else host.id,
            migrating_to_host=migrating,
            exit_status=None if not down else ("error" if report.exit_code else "normal"),
            exit_reason=None if report.exit_reason is None else str(report.exit_reason),
            exit_message=report.exit_message,
            last_notify_time=report.time,
            external=vm.dynamic.external,
        )
        event = status_event(vm.static, vm.dynamic.status, report.status, host, report)
        d = self._vms.apply(dynamic, force=action.moved, event=event)
        if down and report.exit_reason not in (EXIT_ADMIN_SHUTDOWN, EXIT_USER_SHUTDOWN):
            self._tell_down(VmDown(vm_id, host.id, report.exit_message or "Down",
                                   error=bool(report.exit_code)))
        return d

    def mark_down(self, vm_id: UUID, host: ReportingHost, reason: str) -> Deferred:
        """The engine decides a VM is Down (lost by its host): write it, release, tell."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return Deferred.fromCoroutine(_nothing())
        dynamic = VmDynamic(vm_id=vm_id, status=VmStatus.DOWN, exit_status="error",
                            exit_message=reason, external=vm.dynamic.external)
        event = audit_event(AuditType.VM_DOWN_ERROR, vm_id=vm_id, host_id=host.id,
                            vm=vm.name, host=host.name, reason=reason)
        self._tell_down(VmDown(vm_id, host.id, reason, error=True))
        return self._vms.apply(dynamic, force=True, event=event)

    def _tell_down(self, down: VmDown) -> None:
        for observer in list(self.down_observers):
            try:
                observer(down)
            except Exception:
                self.log.failure("down observer failed for VM {vm_id}", vm_id=down.vm_id)

    def _clear(self, host: ReportingHost, action: rc.ClearDown) -> Deferred:
        d = host.link.call("VM.destroy", {"vmID": action.vm_id})
        d.addErrback(lambda f: self.log.debug("clearing Down VM {vm_id} on {host}: {error}",
                                              vm_id=action.vm_id, host=host.name,
                                              error=f.value))
        return d

    async def _adopt(self, host: ReportingHost, action: rc.RecordExternal) -> None:
        if action.vm_id in self._adopting:
            return
        self._adopting.add(action.vm_id)
        try:
            await self._record_external(host, action.report, action.reason)
        except StoreError as e:
            self.log.warn("external VM {vm_id} on {host} not recorded: {error}",
                          vm_id=action.vm_id, host=host.name, error=e)
        finally:
            self._adopting.discard(action.vm_id)

    async def _record_external(self, host: ReportingHost, report: rc.VmReport, why: str) -> None:
        vm_id = UUID(report.vm_id)
        if self._vms.get(vm_id) is not None:
            return
        memory, vcpus = await self._sizes(host, report.vm_id)
        name = report.name or f"external-{report.vm_id[:8]}"
        dynamic = VmDynamic(vm_id=vm_id, status=report.status, run_on_host=host.id,
                            last_notify_time=report.time, external=True)
        for candidate in (name, f"{name}-external-{report.vm_id[:8]}"):
            static = VmStatic(id=vm_id, name=candidate, mem_mib=memory, vcpus=vcpus)
            try:
                vm = await self._store.add_vm(static, dynamic=dynamic)
                break
            except DuplicateName:
                continue
        else:
            raise DuplicateName("vm", name)
        self._vms.put(vm)
        self._cluster.add_vm(vm)
        self.log.warn("external VM {name} ({vm_id}) found on {host}", name=vm.name,
                      vm_id=vm_id, host=host.name)
        await self._auditor.record(AuditType.VM_EXTERNAL_FOUND, vm_id=vm_id, host_id=host.id,
                                   vm=vm.name, host=host.name, reason=why)

    async def _sizes(self, host: ReportingHost, vm_id: str) -> tuple[int, int]:
        """Memory (MiB) and vCPUs of a VM from its host's definition (1 and 1 if unknown)."""
        try:
            found = await host.link.call("Host.getVMFullList", {"vmList": [vm_id]})
            entry = found[0] if isinstance(found, list) and found else {}
        except Exception as e:
            self.log.info("no definition of external VM {vm_id}: {error}", vm_id=vm_id, error=e)
            entry = {}
        memory = integer(entry.get("memSize")) if isinstance(entry, dict) else None
        vcpus = integer(entry.get("smp")) if isinstance(entry, dict) else None
        return max(1, memory or 1), max(1, vcpus or 1)


async def _nothing() -> None:
    return None
