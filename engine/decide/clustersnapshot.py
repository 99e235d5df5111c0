"""Pure: what the engine's store keeps of the cluster manager's state, and rebuilding from it.

The store keeps host statuses, VM rows (static configuration, dynamic status, host, exit
reason) and running jobs; :class:`ClusterSnapshot` is that, in the shapes the manager reads.
:func:`dump` gives what the store holds once the shell has carried out every command;
:func:`load` rebuilds a manager's state from it after an engine restart. What is lost is only
progress that is safe to redo: a fencing round starts again (after ``startup_fence_delay``),
HA retry counters start from zero, a maintenance deadline starts again.

On load, the store's rows say what to resume:

- a VM in Unknown stays Unknown: its host must still be proven dead;
- an HA VM Down with an error exit (crashed, host fenced, lost, start failed) joins the restart
  queue at once (oVirt's ``getAllFailedAutoStartVms`` at engine start);
- a running start or migration job is an operation in flight again, with its resources
  reserved in the pending ledger, until its host reports;
- a host PreparingForMaintenance resumes its evacuation, with a fresh deadline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from . import harestart, hoststate
from .clusterstate import (
    ClusterState,
    ExitReason,
    HostRecord,
    MaintenanceRequest,
    Operation,
    VmRecord,
)
from .hoststate import HostState
from .moves import MoveHistory, MoveRecord
from .powersave import PowerHistory, PowerRecord


@dataclass(frozen=True, slots=True)
class StoredHost:
    """
    A host as the store keeps it (static row plus ``status``).

    :ivar power_management: power fencing is possible (its power management is enabled).
    :ivar fencing_enabled: the engine may fence it by itself.
    """

    id: str
    name: str
    status: str
    cpus: int
    memory_mib: int
    reserved_mib: int = 0
    power_management: bool = False
    fencing_enabled: bool = True


@dataclass(frozen=True, slots=True)
class StoredVm:
    """A VM as the store keeps it (static row plus the dynamic ``status``, hosts, exit)."""

    id: str
    name: str
    memory_mib: int
    vcpus: int = 1
    ha: bool = False
    priority: int = 0
    pinned_host: str | None = None
    status: str = VmStatus.DOWN
    host: str | None = None
    target: str | None = None
    exit: str | None = None


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A start (``kind`` ``"start"``) or migration (``"migrate"``) job still running."""

    kind: str
    vm: str
    host: str


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """
    What the engine's store knows about the cluster, in the shapes the manager reads.

    :ivar moves: the balancer's recent moves (its cooldown and no-move-back survive restarts).
    :ivar power: power saving's recent host power actions and shortages (its hysteresis).
    """

    hosts: tuple[StoredHost, ...] = ()
    vms: tuple[StoredVm, ...] = ()
    jobs: tuple[StoredJob, ...] = ()
    moves: tuple[MoveRecord, ...] = ()
    power: tuple[PowerRecord, ...] = ()


# -- loading -------------------------------------------------------------------------------------


def add_host(state: ClusterState, now: float, host: StoredHost, *, link_up: bool) -> HostRecord:
    """
    Track a host in its stored status.

    :param link_up: its link is known to be connected; else a watched host starts its grace
        period now (:func:`engine.decide.hoststate.resume`).
    :returns: its record.
    :raises ValueError: for a status the host state machine does not know.
    """
    status = HostState(host.status)
    record = HostRecord(
        id=host.id,
        name=host.name,
        cpus=host.cpus,
        memory_mib=host.memory_mib,
        status=hoststate.HostStatus(status, since=now, link_up=True)
        if link_up
        else hoststate.resume(status, now),
        reserved_mib=host.reserved_mib,
        power_management=host.power_management,
        fencing_enabled=host.fencing_enabled,
    )
    state.hosts[host.id] = record
    return record


def add_vm(state: ClusterState, vm: StoredVm) -> VmRecord:
    """
    Track a VM in its stored status.

    :returns: its record.
    :raises ValueError: for an unknown status or exit reason.
    """
    record = VmRecord(
        id=vm.id,
        name=vm.name,
        memory_mib=vm.memory_mib,
        vcpus=vm.vcpus,
        ha=vm.ha,
        priority=vm.priority,
        pinned_host=vm.pinned_host,
        status=VmStatus(vm.status),
        host=vm.host,
        target=vm.target,
        exit=ExitReason(vm.exit) if vm.exit else None,
    )
    state.vms[vm.id] = record
    return record


def _resume_job(state: ClusterState, job: StoredJob, now: float) -> None:
    vm = state.vms.get(job.vm)
    if vm is None:
        raise ValueError(f"job {job.kind!r} for an unknown VM {job.vm!r}")
    settings = state.settings
    if job.kind == "stop":
        vm.op = Operation("stop", job.host, now, math.inf)
        return
    if job.kind == "start":
        vm.op = Operation("start", job.host, now, now + settings.start_timeout)
    elif job.kind == "migrate":
        vm.op = Operation("migrate", job.host, now, now + settings.migration_timeout)
        vm.target = job.host
    else:
        raise ValueError(f"unknown job kind {job.kind!r}")
    state.pending.reserve(vm.request(), job.host)


def load(state: ClusterState, now: float, snapshot: ClusterSnapshot, *, restarted: bool) -> None:
    """
    Fill an empty ``state`` from ``snapshot``.

    :param restarted: the engine restarted (links not connected yet: watched hosts start their
        grace period, fencing waits ``startup_fence_delay``, an event says what was resumed);
        False for a cluster known to be healthy at ``now`` (the simulator's start).
    :raises ValueError: for a status, exit reason or job the manager does not know.
    """
    for stored_host in snapshot.hosts:
        add_host(state, now, stored_host, link_up=not restarted)
    for stored_vm in snapshot.vms:
        add_vm(state, stored_vm)
    for job in snapshot.jobs:
        _resume_job(state, job, now)
    state.moves = MoveHistory(tuple(snapshot.moves))
    state.power = PowerHistory(tuple(snapshot.power))
    for record in state.sorted_vms():
        if record.status is VmStatus.UNKNOWN:
            record.lost_at = now
        elif record.status is VmStatus.DOWN and record.ha and record.exit is not None:
            if record.exit.restartable:
                harestart.queue(
                    state, record, now, f"found Down ({record.exit.words}) in the store"
                )
    for host in state.sorted_hosts():
        if host.state is HostState.PREPARING_FOR_MAINTENANCE:
            host.maintenance = MaintenanceRequest(now, now + state.settings.maintenance_deadline)
    if restarted:
        state.fence_from = now + state.settings.startup_fence_delay
        state.note(T.HA_STATE_RESUMED, summary=summary(state))


def summary(state: ClusterState) -> str:
    """:returns: what there is to resume, in one line."""
    silent = sum(1 for h in state.hosts.values() if h.state is HostState.NON_RESPONSIVE)
    unknown = sum(1 for v in state.vms.values() if v.status is VmStatus.UNKNOWN)
    queued = sum(1 for v in state.vms.values() if v.restart is not None)
    jobs = sum(1 for v in state.vms.values() if v.op is not None)
    return (
        f"{len(state.hosts)} hosts ({silent} NonResponsive), {unknown} VMs Unknown, "
        f"{queued} HA VMs to restart, {jobs} jobs in flight; fencing waits "
        f"{state.settings.startup_fence_delay:g} s"
    )


# -- dumping -------------------------------------------------------------------------------------


def dump(state: ClusterState) -> ClusterSnapshot:
    """:returns: what the store holds once the shell has carried out every command."""
    hosts = tuple(
        StoredHost(
            h.id,
            h.name,
            str(h.state),
            h.cpus,
            h.memory_mib,
            h.reserved_mib,
            h.power_management,
            h.fencing_enabled,
        )
        for h in state.sorted_hosts()
    )
    vms = tuple(
        StoredVm(
            v.id,
            v.name,
            v.memory_mib,
            v.vcpus,
            v.ha,
            v.priority,
            v.pinned_host,
            str(v.status),
            v.host,
            v.target,
            str(v.exit) if v.exit else None,
        )
        for v in state.sorted_vms()
    )
    jobs = tuple(
        StoredJob(v.op.kind, v.id, v.op.host) for v in state.sorted_vms() if v.op is not None
    )
    return ClusterSnapshot(hosts, vms, jobs, state.moves.records, state.power.records)
