"""Pure: maintenance evacuation, its deadline, and moving VMs back afterwards.

A host asked into maintenance goes PreparingForMaintenance (the scheduler no longer picks it) and
every tick, until it is empty:

- its VMs are migrated away in priority order (highest first), each to the host the scheduler
  chooses with the VM's own host excluded, so they spread by the policy's weights rather than
  land on one host (``reference/engine-peers.md`` §8 item 8); at most ``max_migrations_out``
  leave the host at once and at most ``max_migrations_in`` arrive at any host at once;
- a VM that cannot move (pinned to the host, or no host passes the filters, or its migration
  failed) is reported once per distinct reason and tried again after ``evacuation_retry``;
- once no VM is left, the host goes to **Maintenance**.

A deadline (``maintenance_deadline`` after the request) ends the waiting with a report of every
VM that could not move and why (oVirt has no deadline: §8 item 1). Then, per
``on_maintenance_deadline``: ``activate`` (the default) takes the host back Up, so a host that
takes no VMs does not silently shrink the cluster and the admin decides what to do with the
report; ``stay`` keeps it PreparingForMaintenance, still trying.

A NonResponsive (or Down) host goes to Maintenance at once: nothing can be migrated off it. Its
VMs in Unknown still need fencing, which goes on (see :mod:`engine.decide.fencing`).

With ``move_back``, the VMs that left for the maintenance are migrated back when the host is
activated and Up, each once, if the scheduler accepts the host for it.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from .clusterstate import (
    ClusterState,
    DeadlineAction,
    HostRecord,
    MaintenanceRequest,
    Operation,
    VmRecord,
)
from .commands import MigrateVm
from .hoststate import HostEvent, HostState
from .model import VmRequest
from .placing import choice_text, place_vm, refusal_text
from .scheduler import Decision

#: How the manager applies a host event (its ``_apply``): host, event, now, detail.
ApplyHost = Callable[[HostRecord, HostEvent, float, str], None]


def start_migration(
    state: ClusterState, vm: VmRecord, decision: Decision, reason: str, now: float
) -> MigrateVm:
    """Record ``vm``'s migration to the decision's host and queue the command."""
    assert vm.host is not None and decision.host is not None
    command = MigrateVm(vm.id, vm.host, decision.host, reason, decision)
    vm.status, vm.target = VmStatus.MIGRATING_FROM, decision.host
    vm.op = Operation("migrate", decision.host, now, now + state.settings.migration_timeout)
    state.emit(command)
    return command


def migrated(state: ClusterState, vm: VmRecord, now: float) -> None:
    """``vm``'s migration ended well: it runs on its destination."""
    source, vm.host = vm.host, vm.target
    vm.status, vm.target, vm.op, vm.evac_reason = VmStatus.UP, None, None, None
    state.pending.release(vm.id)
    src = state.hosts.get(source) if source is not None else None
    if src is not None and src.maintenance is not None:
        src.maintenance.moved.append(vm.id)
    state.note(T.VM_MIGRATION_DONE, vm=vm.id, destination=state.host_name(vm.host))


def migration_failed(state: ClusterState, vm: VmRecord, now: float, why: str) -> None:
    """``vm``'s migration failed: it stays where it was (if that host still answers)."""
    target = vm.target
    vm.target, vm.op = None, None
    state.pending.release(vm.id)
    if vm.status is VmStatus.MIGRATING_FROM:
        vm.status = VmStatus.UP
    vm.evac_next = now + state.settings.evacuation_retry
    source = state.hosts.get(vm.host) if vm.host is not None else None
    if source is not None and source.maintenance is not None:  # the maintenance report's why
        vm.evac_reason = f"its migration to {state.host_name(target)} failed: {why}"
    state.note(T.VM_MIGRATION_FAILED, vm=vm.id, destination=state.host_name(target), reason=why)


def tick(state: ClusterState, now: float, apply: ApplyHost) -> None:
    """Evacuate the hosts preparing for maintenance; move VMs back after activations."""
    for host in state.sorted_hosts():
        request = host.maintenance
        if request is not None and host.state is HostState.PREPARING_FOR_MAINTENANCE:
            _evacuate(state, host, request, now, apply)
    _move_back(state, now)


def _evacuate(
    state: ClusterState, host: HostRecord, request: MaintenanceRequest, now: float, apply: ApplyHost
) -> None:
    left = state.vms_on(host.id)
    if not left:
        apply(host, HostEvent.VMS_EVACUATED, now, "")
        return
    if now >= request.deadline and not request.reported:
        if _deadline(state, host, request, left, now, apply):
            return
    if host.status.trouble_since is not None:
        return  # it does not answer: no migration can start; HA takes over if it is lost
    leaving = sum(1 for vm in left if vm.op is not None and vm.op.kind == "migrate")
    for vm in sorted(left, key=lambda v: (-v.priority, v.name, v.id)):
        if leaving >= state.settings.max_migrations_out:
            break
        if vm.op is not None or now < vm.evac_next or vm.status is not VmStatus.UP:
            continue
        others = {h for h in state.hosts if h != host.id}
        wanted = state.request(vm, current_host=host.id)
        placement = place_vm(state, wanted, now, kind="migrate", only=others)
        decision = placement.decision
        if decision.host is None:
            if not placement.slot_wait:
                _cannot(state, host, vm, now, _refusal(state, host, vm, wanted, now))
            continue
        reason = choice_text(decision)
        start_migration(state, vm, decision, f"maintenance of host {host.name}; {reason}", now)
        state.note(
            T.MAINTENANCE_MIGRATION,
            host=host.id,
            vm=vm.id,
            destination=decision.host_name,
            reason=reason,
            explanation=decision.summary(),
        )
        leaving += 1


def _refusal(
    state: ClusterState, host: HostRecord, vm: VmRecord, wanted: VmRequest, now: float
) -> str:
    """Why ``vm`` cannot leave ``host``; a lone host explains itself ("excluded")."""
    # Its own host explains nothing when there are others; alone, it is the whole story. The
    # source always refuses the request, so nothing is reserved.
    others = None if len(state.hosts) == 1 else {h for h in state.hosts if h != host.id}
    why = refusal_text(place_vm(state, wanted, now, kind="migrate", only=others).decision)
    if vm.pinned_host == host.id:
        return f"it is pinned to this host; stop it or unpin it: {why}"
    return why


def _cannot(state: ClusterState, host: HostRecord, vm: VmRecord, now: float, why: str) -> None:
    vm.evac_next = now + state.settings.evacuation_retry
    if why != vm.evac_reason:
        vm.evac_reason = why
        state.note(T.MAINTENANCE_VM_CANNOT_MOVE, host=host.id, vm=vm.id, reason=why)


def _deadline(
    state: ClusterState,
    host: HostRecord,
    request: MaintenanceRequest,
    left: list[VmRecord],
    now: float,
    apply: ApplyHost,
) -> bool:
    """Report what could not move; :returns: whether the host was taken back Up."""
    request.reported = True
    report = "; ".join(f"{vm.name}: {vm.evac_reason or 'still migrating'}" for vm in left)
    activate = state.settings.on_maintenance_deadline is DeadlineAction.ACTIVATE
    outcome = (
        "maintenance cancelled, the host goes back Up"
        if activate
        else "the host stays PreparingForMaintenance and keeps trying"
    )
    deadline = f"{request.deadline - request.requested_at:g}"
    state.note(
        T.MAINTENANCE_DEADLINE_EXCEEDED,
        host=host.id,
        deadline=deadline,
        report=f"{len(left)} VM(s) left ({report})",
        outcome=outcome,
    )
    if not activate:
        return False
    host.maintenance = None
    for vm in left:
        vm.evac_reason, vm.evac_next = None, 0.0
    apply(host, HostEvent.ACTIVATE_REQUESTED, now, "maintenance deadline passed")
    return True


def _move_back(state: ClusterState, now: float) -> None:
    still: list[tuple[str, str]] = []
    for vm_id, host_id in state.move_back:
        host, vm = state.hosts.get(host_id), state.vms.get(vm_id)
        if host is None or vm is None:
            continue
        if host.state is HostState.CONNECTING:
            still.append((vm_id, host_id))
            continue
        if host.state is not HostState.UP:
            why = f"host {host.name} is {host.state}"
            state.note(T.MAINTENANCE_MOVE_BACK_REFUSED, host=host_id, vm=vm_id, reason=why)
            continue
        if not _move_one(state, vm, host, now):
            still.append((vm_id, host_id))
    state.move_back = still


def _move_one(state: ClusterState, vm: VmRecord, host: HostRecord, now: float) -> bool:
    """Try to move ``vm`` back to ``host``; :returns: False to try again on a later tick."""
    if vm.status is not VmStatus.UP or vm.op is not None or vm.host is None or vm.host == host.id:
        why = "it is already there" if vm.host == host.id else f"it is {vm.status}"
        state.note(T.MAINTENANCE_MOVE_BACK_REFUSED, host=host.id, vm=vm.id, reason=why)
        return True
    if state.in_flight(vm.host, "migrate", outgoing=True) >= state.settings.max_migrations_out:
        return False
    request = state.request(vm, current_host=vm.host)
    placement = place_vm(state, request, now, kind="migrate", only={host.id})
    decision = placement.decision
    if decision.host is None:
        if placement.slot_wait:
            return False
        why = refusal_text(decision)
        state.note(T.MAINTENANCE_MOVE_BACK_REFUSED, host=host.id, vm=vm.id, reason=why)
        return True
    reason = f"it left for the maintenance; host {host.name} passed the scheduler's filters"
    start_migration(state, vm, decision, reason, now)
    state.note(T.MAINTENANCE_MOVE_BACK, host=host.id, vm=vm.id, reason=reason)
    return True
