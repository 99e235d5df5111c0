"""Pure: the cluster manager's view of VMs, kept in line with what hosts report.

A host's agent is the truth about its host (as in :mod:`engine.decide.reconcile`): a VM it lists
runs there, a VM the manager has on that host and that it does not list is not running there.
That second rule is one of the proofs HA accepts: an Unknown VM whose host answers again and
does not list it is Down, and an HA VM then restarts.

The functions here take the facts about VMs (:class:`~engine.decide.facts.VmSeen`,
:class:`~engine.decide.facts.HostVms`, :class:`~engine.decide.facts.JobDone`) and the passing of
time (operations that never answered), update :class:`~engine.decide.clusterstate.ClusterState`
and queue commands and events. :func:`vm_down` is the one place a VM becomes Down: it records
why and queues an HA restart when the reason is an error.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from . import evacuation, facts, harestart
from .clusterstate import RUNNING, ClusterState, ExitReason, HostRecord, VmRecord
from .commands import MarkVmDown
from .hoststate import HostState


def exit_reason(exit: str | None) -> ExitReason:
    """:returns: the reported exit reason; an unknown or missing one counts as a crash."""
    try:
        return ExitReason(exit) if exit else ExitReason.CRASHED
    except ValueError:
        return ExitReason.CRASHED


def vm_down(
    state: ClusterState, vm: VmRecord, host: str | None, exit: ExitReason, why: str, now: float
) -> None:
    """``vm`` is proven Down: record it, and queue an HA restart if it failed."""
    state = state
    if vm.op is not None and vm.op.kind == "stop":
        exit = ExitReason.ADMIN  # the user was stopping it: it is not lost, whatever killed it
    vm.status, vm.host, vm.target, vm.exit, vm.op = VmStatus.DOWN, None, None, exit, None
    state.pending.release(vm.id)
    state.emit(MarkVmDown(vm.id, host, exit, why))
    state.note(T.VM_DOWN_ERROR if exit.restartable else T.VM_DOWN, vm=vm.id, reason=why)
    if vm.lost_at is None:
        vm.lost_at = now
    if vm.ha and exit.restartable:
        harestart.queue(state, vm, now, why)
        return
    vm.restart, vm.lost_at = None, None
    if exit.restartable:
        state.note(T.HA_VM_NOT_RESTARTED, vm=vm.id, reason="it is not highly available")
    elif vm.ha:
        state.note(T.HA_VM_NOT_RESTARTED, vm=vm.id, reason=f"it was {exit.words}, not lost")


def vm_seen(
    state: ClusterState,
    host: HostRecord,
    vm_id: str,
    status: VmStatus,
    exit: str | None,
    detail: str,
    now: float,
) -> None:
    vm = state.vms.get(vm_id)
    if vm is None:
        return  # external VMs are the shell's business
    status = VmStatus(status)
    if status is VmStatus.DOWN:
        _vm_down_seen(state, host, vm, exit_reason(exit), detail, now)
    elif vm.host == host.id:
        _vm_running_here(state, host, vm, status, now)
    elif vm.target == host.id:
        if status is VmStatus.UP:
            evacuation.migrated(state, vm, now)
    elif status is not VmStatus.MIGRATING_TO:
        _vm_found(state, host, vm, status)


def _vm_down_seen(
    state: ClusterState, host: HostRecord, vm: VmRecord, exit: ExitReason, detail: str, now: float
) -> None:
    if vm.host != host.id or vm.status not in RUNNING:
        return  # an old copy's last words, or news the manager already has
    if exit is ExitReason.MIGRATED:
        if vm.target is not None:
            evacuation.migrated(state, vm, now)
        return
    words = f": {detail}" if detail else ""
    if vm.op is not None and vm.op.kind == "start":
        harestart.start_failed(state, vm, now, f"it went down while starting{words}")
        return
    vm_down(state, vm, host.id, exit, f"{exit.words} on host {host.name}{words}", now)


def _vm_running_here(
    state: ClusterState, host: HostRecord, vm: VmRecord, status: VmStatus, now: float
) -> None:
    if vm.op is not None and vm.op.kind == "stop":
        return  # still stopping (or a report from before the stop)
    if vm.op is not None and vm.op.kind == "start":
        if status is VmStatus.UP:
            _vm_up(state, vm, now)
        return
    if (vm.op is not None and vm.op.kind == "migrate") or status is vm.status:
        return
    was, vm.status = vm.status, status
    if was is not VmStatus.UNKNOWN:
        return
    vm.lost_at = None
    state.note(T.VM_STATUS_CHANGED, host=host.id, vm=vm.id, status=str(status))
    if host.state is HostState.MAINTENANCE:
        why = f"it answers again and runs VM {vm.name}; activate it and ask again"
        state.note(T.HOST_MAINTENANCE_FAILED, host=host.id, reason=why)


def _vm_found(state: ClusterState, host: HostRecord, vm: VmRecord, status: VmStatus) -> None:
    """``vm`` runs on a host the manager did not have it on: the host is the truth."""
    state = state
    if vm.op is not None:
        state.pending.release(vm.id)
    vm.host, vm.status, vm.target, vm.op, vm.exit = host.id, status, None, None, None
    vm.restart, vm.lost_at = None, None
    state.note(T.VM_STATUS_CHANGED, host=host.id, vm=vm.id, status=str(status))


def _vm_up(state: ClusterState, vm: VmRecord, now: float) -> None:
    vm.status = VmStatus.UP
    if vm.restart is None:
        state.note(T.VM_STARTED, host=vm.host, vm=vm.id)
    harestart.started(state, vm, now)


def host_vms(
    state: ClusterState, host: HostRecord, listed: Mapping[str, VmStatus], now: float
) -> None:
    for vm_id in sorted(listed):
        vm_seen(state, host, vm_id, listed[vm_id], None, "", now)
    for vm in state.vms_on(host.id):
        if vm.id in listed:
            continue
        if vm.op is not None and vm.op.kind == "stop":
            vm_down(state, vm, host.id, ExitReason.ADMIN, "stopped by the user", now)
        elif vm.op is None:  # a start or migration in flight has its own outcome
            why = f"host {host.name} answered and does not run it"
            vm_down(state, vm, host.id, ExitReason.LOST, why, now)


def job_done(state: ClusterState, done: facts.JobDone, now: float) -> None:
    vm = state.vms.get(done.vm)
    if vm is None or vm.op is None or vm.op.kind != done.kind or vm.op.host != done.host:
        return  # the outcome of an operation the manager no longer waits for
    if done.kind == "stop":
        if not done.ok:  # it still runs, as far as anyone knows: the host's reports say how
            vm.op = None
            if vm.status is VmStatus.POWERING_DOWN:
                vm.status = VmStatus.UP
        return  # a stop that worked ends when the host reports the VM Down
    if done.kind == "start":
        if done.ok:
            _vm_up(state, vm, now)
        else:
            harestart.start_failed(state, vm, now, done.error)
    elif done.ok:
        evacuation.migrated(state, vm, now)
    else:
        evacuation.migration_failed(state, vm, now, done.error)


def timeouts(state: ClusterState, now: float) -> None:
    settings = state.settings
    for vm in state.sorted_vms():
        if vm.op is None or now < vm.op.deadline:
            continue
        if vm.op.kind == "start":
            why = f"no outcome within {settings.start_timeout:g} s"
            harestart.start_failed(state, vm, now, why)
        else:
            why = f"no outcome within {settings.migration_timeout:g} s"
            evacuation.migration_failed(state, vm, now, why)
