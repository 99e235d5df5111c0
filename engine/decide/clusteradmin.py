"""Pure: the admin's requests to the cluster manager, each refused with a reason when it makes
no sense now.

:class:`~engine.decide.cluster.ClusterManager` delegates its request methods here. A request
changes the manager's state and queues commands (``StartVm``, ``MigrateVm``, ``StopVm``,
``SetHostStatus``) like any decision; a refusal raises :class:`RequestRefused` and changes
nothing. Placements go through the real scheduler (:func:`engine.decide.placing.place_vm`),
under the same per-host limits and pending ledger as HA restarts and evacuations, so the
cluster has one view of where room is.

Also here: the shell's bookkeeping of the inventory (hosts and VMs defined, changed, removed)
and :func:`maintenance_report`, what a maintenance job tells its caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from . import clustersnapshot, evacuation, hoststate
from .clustersnapshot import StoredHost, StoredVm
from .clusterstate import ClusterState, HostRecord, MaintenanceRequest, Operation, VmRecord
from .commands import StartVm, StopVm
from .hoststate import HostEvent, HostState, InvalidTransition
from .placing import choice_text, place_vm, refusal_text
from .scheduler import Decision

#: How the manager applies a host event (its ``_apply``): host, event, now, detail.
ApplyHost = Callable[[HostRecord, HostEvent, float, str], None]


class RequestRefused(ValueError):
    """An admin request that makes no sense now; ``reason`` says why, for the API error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def host_of(state: ClusterState, host_id: str) -> HostRecord:
    """:returns: the host's record. :raises RequestRefused: for an unknown host."""
    host = state.hosts.get(host_id)
    if host is None:
        raise RequestRefused(f"no host {host_id!r}")
    return host


def vm_of(state: ClusterState, vm_id: str) -> VmRecord:
    """:returns: the VM's record. :raises RequestRefused: for an unknown VM."""
    vm = state.vms.get(vm_id)
    if vm is None:
        raise RequestRefused(f"no VM {vm_id!r}")
    return vm


def _request(apply: ApplyHost, host: HostRecord, event: HostEvent, now: float) -> None:
    try:
        apply(host, event, now, "")
    except InvalidTransition as e:
        raise RequestRefused(f"host {host.name}: {e.reason}") from None


# -- maintenance -----------------------------------------------------------------------------


def request_maintenance(
    state: ClusterState, apply: ApplyHost, now: float, host_id: str, *, move_back: bool
) -> None:
    """See :meth:`engine.decide.cluster.ClusterManager.request_maintenance`."""
    host = host_of(state, host_id)
    if host.maintenance is not None:
        return  # asked twice: the first request and its deadline stand
    if host.state is HostState.CONNECTING and state.vms_on(host.id):
        raise RequestRefused(
            f"host {host.name} is Connecting (in its grace period) and holds VMs; ask again "
            "once it answers or is declared NonResponsive"
        )
    deadline = now + state.settings.maintenance_deadline
    host.maintenance = MaintenanceRequest(now, deadline, move_back)
    for vm in state.vms_on(host.id):  # a fresh start: earlier reasons no longer hold
        vm.evac_next, vm.evac_reason = 0.0, None
    try:
        _request(apply, host, HostEvent.MAINTENANCE_REQUESTED, now)
    except RequestRefused:
        host.maintenance = None
        raise


def activate(state: ClusterState, apply: ApplyHost, now: float, host_id: str) -> None:
    """See :meth:`engine.decide.cluster.ClusterManager.activate`."""
    host = host_of(state, host_id)
    request, saving = host.maintenance, host.power_saving
    host.maintenance, host.power_saving = None, None  # an admin's activation ends power saving's
    try:
        _request(apply, host, HostEvent.ACTIVATE_REQUESTED, now)
    except RequestRefused:
        host.maintenance, host.power_saving = request, saving
        raise
    if request is not None and request.move_back:
        state.move_back.extend((vm, host.id) for vm in request.moved)


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """
    Where one host's maintenance stands, VM by VM.

    :ivar state: the host's state now.
    :ivar requested: a maintenance request stands for the host.
    :ivar moved: ``(VM id, host id)`` of each VM that left for this maintenance, and where it
        runs now (None when it is no longer running).
    :ivar stuck: ``(VM id, why)`` of each VM still on the host that could not move, last time.
    :ivar moving: the VMs still on the host with a migration (or stop) in flight.
    :ivar waiting: the VMs still on the host with no outcome yet.
    """

    state: str
    requested: bool
    moved: tuple[tuple[str, str | None], ...] = ()
    stuck: tuple[tuple[str, str], ...] = ()
    moving: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()

    @property
    def settled(self) -> bool:
        """Every VM left on the host has had an outcome and nothing is in flight."""
        return not self.moving and not self.waiting


def maintenance_report(state: ClusterState, host_id: str) -> MaintenanceReport:
    """:returns: where ``host_id``'s maintenance stands. :raises RequestRefused: unknown host."""
    host = host_of(state, host_id)
    request = host.maintenance
    moved = tuple(
        (vm_id, _running_on(state, vm_id)) for vm_id in (request.moved if request else ())
    )
    stuck: list[tuple[str, str]] = []
    moving: list[str] = []
    waiting: list[str] = []
    for vm in state.vms_on(host.id):
        if vm.op is not None:
            moving.append(vm.id)
        elif vm.evac_reason is not None:
            stuck.append((vm.id, vm.evac_reason))
        else:
            waiting.append(vm.id)
    return MaintenanceReport(
        str(host.state), request is not None, moved, tuple(stuck), tuple(moving), tuple(waiting)
    )


def _running_on(state: ClusterState, vm_id: str) -> str | None:
    vm = state.vms.get(vm_id)
    if vm is None or vm.status is VmStatus.DOWN:
        return None
    return vm.host


# -- VMs -------------------------------------------------------------------------------------


def start_vm(state: ClusterState, now: float, vm_id: str, *, host: str | None) -> Decision:
    """See :meth:`engine.decide.cluster.ClusterManager.start_vm`."""
    vm = vm_of(state, vm_id)
    if vm.status is not VmStatus.DOWN or vm.restart is not None:
        if vm.restart is not None:
            raise RequestRefused(
                f"VM {vm.name} is about to be restarted by HA ({vm.restart.reason}); stop it "
                "first to take it over"
            )
        raise RequestRefused(f"VM {vm.name} is {vm.status}; only a Down VM can be started")
    only = None if host is None else {host}
    placed = place_vm(state, state.request(vm), now, kind="start", only=only, limits=False)
    decision = placed.decision
    if decision.host is None:
        state.note(T.VM_START_REFUSED, vm=vm.id, reason=refusal_text(decision))
        return decision
    vm.status, vm.host, vm.exit = VmStatus.WAIT_FOR_LAUNCH, decision.host, None
    vm.op = Operation("start", decision.host, now, now + state.settings.start_timeout)
    reason = choice_text(decision)
    state.emit(StartVm(vm.id, decision.host, f"started by the user; {reason}", decision))
    state.note(T.VM_PLACED, host=decision.host, vm=vm.id, reason=reason)
    return decision


def migrate_vm(state: ClusterState, now: float, vm_id: str, *, host: str | None) -> Decision:
    """See :meth:`engine.decide.cluster.ClusterManager.migrate_vm`."""
    vm = vm_of(state, vm_id)
    if vm.status is not VmStatus.UP or vm.op is not None or vm.host is None:
        raise RequestRefused(
            f"VM {vm.name} is {vm.status}; only an Up VM with nothing in flight can migrate"
        )
    source = vm.host
    if host == source:
        raise RequestRefused(f"VM {vm.name} already runs on host {state.host_name(source)}")
    only = None if host is None else {host}
    request = state.request(vm, current_host=source)
    decision = place_vm(state, request, now, kind="migrate", only=only, limits=False).decision
    if decision.host is not None:
        why = f"requested by the user; {choice_text(decision)}"
        evacuation.start_migration(state, vm, decision, why, now)
    return decision


def stop_vm(state: ClusterState, now: float, vm_id: str) -> None:
    """See :meth:`engine.decide.cluster.ClusterManager.stop_vm`."""
    vm = vm_of(state, vm_id)
    if vm.op is not None and vm.op.kind == "stop":
        return  # asked twice
    if vm.status is VmStatus.UNKNOWN:
        raise RequestRefused(
            f"VM {vm.name} is Unknown: its host does not answer; it can be stopped once the "
            "host answers or is fenced"
        )
    if vm.op is not None:
        raise RequestRefused(f"VM {vm.name} is {vm.status}; try again when it is done")
    if vm.status is VmStatus.DOWN:
        if vm.restart is not None:
            vm.restart = None
            state.note(T.HA_VM_NOT_RESTARTED, vm=vm.id, reason="the user stopped it")
        return
    host = vm.host
    assert host is not None
    vm.status = VmStatus.POWERING_DOWN
    vm.op = Operation("stop", host, now, math.inf)
    state.note(T.VM_STOPPING, host=host, vm=vm.id, reason="the user stops it")
    state.emit(StopVm(vm.id, host, "stopped by the user"))


# -- the inventory ---------------------------------------------------------------------------


def update_host(state: ClusterState, host: StoredHost) -> None:
    """A known host's definition changed (sizes learnt at connection, power management)."""
    record = state.hosts.get(host.id)
    if record is None:
        return
    record.name, record.cpus, record.memory_mib = host.name, host.cpus, host.memory_mib
    record.reserved_mib = host.reserved_mib
    record.power_management = host.power_management
    record.fencing_enabled = host.fencing_enabled


def remove_host(state: ClusterState, now: float, host_id: str, *, check_only: bool) -> None:
    """
    Forget a host (only in Maintenance, Down or never connected, with no VMs).

    :param check_only: only say whether it may be removed.
    :raises RequestRefused: why it may not.
    """
    host = host_of(state, host_id)
    try:
        hoststate.step(host.status, HostEvent.REMOVED, now, timing=state.settings.timing)
    except InvalidTransition as e:
        why = f"cannot remove host {host.name}: it is {e.state}; {e.reason}"
        raise RequestRefused(why) from None
    left = [vm.name for vm in state.vms_on(host.id)]
    if left:
        raise RequestRefused(f"host {host.name} still has VMs: {', '.join(left)}")
    if check_only:
        return
    del state.hosts[host.id]
    state.pending.release_host(host.id)
    state.move_back = [(vm, h) for vm, h in state.move_back if h != host.id]


def update_vm(state: ClusterState, vm: StoredVm) -> None:
    """A VM's definition changed: its next placement uses it (its status is kept)."""
    record = state.vms.get(vm.id)
    if record is None:
        clustersnapshot.add_vm(state, vm)
        return
    record.name, record.memory_mib, record.vcpus = vm.name, vm.memory_mib, vm.vcpus
    record.ha, record.priority, record.pinned_host = vm.ha, vm.priority, vm.pinned_host
    if not vm.ha and record.restart is not None:
        record.restart = None
        state.note(T.HA_VM_NOT_RESTARTED, vm=vm.id, reason="it is no longer highly available")


def remove_vm(state: ClusterState, vm_id: str) -> None:
    """Forget a VM (the shell removes only Down VMs)."""
    state.vms.pop(vm_id, None)
    state.pending.release(vm_id)
    state.move_back = [(vm, h) for vm, h in state.move_back if vm != vm_id]


def host_status(state: ClusterState, host_id: str) -> hoststate.HostStatus | None:
    """:returns: the host's status per the host state machine, or None for an unknown host."""
    host = state.hosts.get(host_id)
    return None if host is None else host.status
