"""Pure: the cluster manager's adapter, between the engine's rows and observations and the
manager's facts, snapshot and commands.

One place translates both ways, so the shell modules (:mod:`engine.cluster`,
:mod:`engine.clustercarry`) only move data:

- **in**: host and VM rows (with each host's power management) become the
  :class:`~engine.decide.clustersnapshot.ClusterSnapshot` the manager is built from; link
  events, agent reports, job rows and fence results become
  :mod:`~engine.decide.facts`;
- **out**: ``MarkVmDown`` / ``MarkVmUnknown`` become the VM rows to write (or nothing, when the
  row already says so), ``Event`` becomes an audit row, a ``FenceHost`` a fence action.

Exit reasons: the agent reports VDSM's numbers (``vdsmlike.vm.states.ExitReason``); the manager
thinks in :class:`~engine.decide.clusterstate.ExitReason` (why a VM is Down, as far as HA
cares). A Down row written by the manager keeps the manager's word (``host_fenced``,
``lost``...) in its ``exit_reason`` column, so an engine that restarts knows which HA VMs are
still to restart.

Events: the manager explains every decision with an ``Event``. Those about a row it changes
(a host's new status, a VM marked Down or Unknown) are written with that row, in one
transaction; those that repeat what the engine's shell records itself, with more detail, from
the same observation (a VM reported Up, a migration done, a placement with every host's
explanation) are left out: :data:`SHELL_RECORDED`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

from vdsmlike.vm.states import ExitReason as VdsmExit

from .decide import commands as c
from .decide import facts as f
from .decide.clustersnapshot import ClusterSnapshot, StoredHost, StoredVm
from .decide.clusterstate import ExitReason
from .decide.hoststate import HostEvent
from .decide.reconcile import VmReport
from .fence.result import FenceAction, FenceResult, Outcome
from .store.auditlog import NewAuditEvent
from .store.rows import Host, HostPowerManagement, Job, JobStatus, Vm, VmDynamic, VmStatus
from .wire import reserved_memory_mib

#: The manager's events the shell records itself from the same observation, with more detail.
SHELL_RECORDED = frozenset(
    {
        "VM_STARTED",  # VmSync, from the agent's report
        "VM_STATUS_CHANGED",  # VmSync
        "VM_PLACED",  # the start job, with every host's explanation
        "VM_START_REFUSED",  # the start request, with every host's explanation
        "VM_START_FAILED",  # the start job
        "VM_MIGRATION_DONE",  # the migration job
        "VM_MIGRATION_FAILED",  # the migration job
    }
)

#: The events that describe a row change: written with it, dropped with it.
_ROW_EVENTS = {
    c.MarkVmDown: frozenset({"VM_DOWN", "VM_DOWN_ERROR"}),
    c.MarkVmUnknown: frozenset({"VM_UNKNOWN"}),
}

#: VDSM exit reasons and what they mean for HA.
_EXITS = {
    VdsmExit.SUCCESS: ExitReason.USER,  # the guest powered itself off
    VdsmExit.USER_SHUTDOWN: ExitReason.USER,
    VdsmExit.ADMIN_SHUTDOWN: ExitReason.ADMIN,
    VdsmExit.SAVE_STATE_SUCCEEDED: ExitReason.ADMIN,
    VdsmExit.DESTROYED_ON_REBOOT: ExitReason.ADMIN,
    VdsmExit.MIGRATION_SUCCEEDED: ExitReason.MIGRATED,
    VdsmExit.LIBVIRT_START_FAILED: ExitReason.START_FAILED,
    VdsmExit.HOST_SHUTDOWN: ExitReason.LOST,
}


def _id(value: UUID | None) -> str | None:
    return None if value is None else str(value)


# -- rows in ---------------------------------------------------------------------------------


def exit_reason(exit_status: str | None, reason: str | int | None) -> ExitReason | None:
    """
    Why a VM is Down, for HA, from what its row or report says.

    :param exit_status: ``"error"`` or ``"normal"`` (a row), or None.
    :param reason: VDSM's exit reason number, or the manager's own word (a row it wrote).
    :returns: the reason, or None when nothing says the VM ever ran.
    """
    if isinstance(reason, str) and reason.strip():
        word = reason.strip()
        if word in set(ExitReason):
            return ExitReason(word)
        try:
            reason = int(word)
        except ValueError:
            reason = None
    if isinstance(reason, int) and not isinstance(reason, bool):
        try:
            known = _EXITS.get(VdsmExit(reason))
        except ValueError:
            known = None
        return known or ExitReason.CRASHED
    if exit_status == "error":
        return ExitReason.CRASHED
    if exit_status == "normal":
        return ExitReason.USER
    return None


def stored_host(host: Host, power: HostPowerManagement | None = None) -> StoredHost:
    """:returns: a host row (and its power management) as the manager's snapshot holds it."""
    dynamic = host.dynamic
    return StoredHost(
        id=str(host.id),
        name=host.name,
        status=str(dynamic.status),
        cpus=dynamic.cpu_count or 0,
        memory_mib=dynamic.mem_total_mib or 0,
        reserved_mib=reserved_memory_mib(dynamic.capabilities),
        power_management=power is not None and power.enabled and bool(power.driver),
        fencing_enabled=power.fencing_enabled if power is not None else True,
    )


def stored_vm(vm: Vm) -> StoredVm:
    """:returns: a VM row as the manager's snapshot holds it (an external VM is never HA)."""
    static, dynamic = vm.static, vm.dynamic
    down = dynamic.status is VmStatus.DOWN
    exit = exit_reason(dynamic.exit_status, dynamic.exit_reason) if down else None
    return StoredVm(
        id=str(vm.id),
        name=vm.name,
        memory_mib=static.mem_mib,
        vcpus=static.vcpus,
        ha=static.ha and not dynamic.external,
        priority=static.ha_priority,
        pinned_host=_id(static.pinned_host),
        status=str(dynamic.status),
        host=None if down else _id(dynamic.run_on_host),
        target=None if down else _id(dynamic.migrating_to_host),
        exit=None if exit is None else str(exit),
    )


def snapshot(
    hosts: Iterable[Host], vms: Iterable[Vm], powers: dict[UUID, HostPowerManagement]
) -> ClusterSnapshot:
    """:returns: the manager's snapshot of the store's rows (no jobs: the engine fails the
    jobs an earlier run left, and the VMs' rows say what they left behind)."""
    return ClusterSnapshot(
        hosts=tuple(stored_host(h, powers.get(h.id)) for h in hosts),
        vms=tuple(stored_vm(v) for v in vms),
    )


# -- observations in -------------------------------------------------------------------------


def host_seen(host_id: UUID, event: HostEvent, detail: str = "") -> f.HostSeen:
    """:returns: a link event (``connected``, ``link_lost``, ...) as a fact."""
    return f.HostSeen(str(host_id), HostEvent(event), detail)


def vm_seen(host_id: UUID, report: VmReport) -> f.VmSeen:
    """:returns: one VM's report (an event, or one entry of a poll) as a fact."""
    down = report.status is VmStatus.DOWN
    code = report.exit_reason
    exit = exit_reason("error" if report.exit_code else "normal", code) if down else None
    return f.VmSeen(
        str(host_id),
        report.vm_id,
        report.status,
        None if exit is None else str(exit),
        (report.exit_message or "") if down else "",
    )


def host_vms(host_id: UUID, vms: Iterable[Vm]) -> f.HostVms:
    """
    :param vms: the VMs the engine's rows have on the host after its poll was reconciled
        (in agent-time order, stale entries dropped), Down ones excluded.
    :returns: the host's VM list as a fact.
    """
    return f.HostVms(str(host_id), {str(v.id): v.dynamic.status for v in vms})


def power_seen(host_id: UUID, result: FenceResult) -> f.PowerSeen:
    """:returns: a power status answer as a fact (its proof or message as the detail)."""
    return f.PowerSeen(str(host_id), str(result.power), result.proof or result.message)


def fence_action(command: c.FenceHost) -> tuple[str, str]:
    """:returns: the ``(action, agent)`` that carries out ``command`` with ``FenceActions``."""
    if command.method == c.SOFT:
        return FenceAction.RESTART, "soft"
    return (FenceAction.REBOOT if command.power_on_after else FenceAction.OFF), "power"


def fence_done(host_id: UUID, method: str, job: Job | None, error: str = "") -> f.FenceDone:
    """
    :param job: the fence job once finished (None: it never ran, ``error`` says why).
    :returns: its outcome as a fact. A failed job whose fence result was ``unknown`` (its
        ``error`` says so) proves nothing either way: ``status_unknown``.
    """
    if job is None:
        return f.FenceDone(str(host_id), method, f.FAILED, error or "the fence did not run")
    if job.status is JobStatus.SUCCEEDED:
        result = job.result if isinstance(job.result, dict) else {}
        detail = str(result.get("proof") or result.get("message") or "")
        done = f.RESTARTED if method == c.SOFT else f.FENCED
        return f.FenceDone(str(host_id), method, done, detail)
    why = job.error or "failed"
    unknown = f": {Outcome.UNKNOWN}: " in why  # FenceActions' "<action> of host h: unknown: ..."
    return f.FenceDone(str(host_id), method, f.STATUS_UNKNOWN if unknown else f.FAILED, why)


def job_done(kind: str, vm_id: str, host_id: str, job: Job | None, error: str = "") -> f.JobDone:
    """:returns: a start, migration or stop job's outcome as a fact."""
    if job is None:
        return f.JobDone(kind, vm_id, host_id, False, error or "the job did not run")
    ok = job.status is JobStatus.SUCCEEDED
    return f.JobDone(kind, vm_id, host_id, ok, "" if ok else (job.error or "failed"))


# -- commands out ----------------------------------------------------------------------------


def down_row(vm: Vm, command: c.MarkVmDown) -> VmDynamic | None:
    """:returns: the row that records ``vm`` Down as the manager decided, or None when its row
    already says Down, or says it runs elsewhere (a newer report moved it)."""
    dynamic = vm.dynamic
    if dynamic.status is VmStatus.DOWN:
        return None
    if command.host is not None and _id(dynamic.run_on_host) not in (command.host, None):
        return None
    error = ExitReason(command.exit).restartable
    return VmDynamic(
        vm_id=vm.id,
        status=VmStatus.DOWN,
        exit_status="error" if error else "normal",
        exit_reason=str(command.exit),
        exit_message=command.reason,
        external=dynamic.external,
    )


def unknown_row(vm: Vm, command: c.MarkVmUnknown) -> VmDynamic | None:
    """:returns: the row that records ``vm`` Unknown on its host, or None when its row already
    says so, or says it is Down or elsewhere."""
    dynamic = vm.dynamic
    if dynamic.status in (VmStatus.UNKNOWN, VmStatus.DOWN):
        return None
    if _id(dynamic.run_on_host) != command.host:
        return None
    return VmDynamic(
        vm_id=vm.id,
        status=VmStatus.UNKNOWN,
        run_on_host=dynamic.run_on_host,
        external=dynamic.external,
    )


def audit(event: c.Event, job_id: UUID | None = None) -> NewAuditEvent:
    """:returns: the manager's event as an audit row."""
    return NewAuditEvent(
        type=event.type,
        severity=event.severity,
        message=event.message,
        host_id=None if event.host is None else UUID(event.host),
        vm_id=None if event.vm is None else UUID(event.vm),
        job_id=job_id,
        details=dict(event.details),
    )


def paired(commands: Sequence[c.Command]) -> list[tuple[c.Command, c.Event | None]]:
    """
    The commands in order, each row command with the event that describes its change (the
    event right after it, about the same host or VM), which is then not listed on its own.
    Events of :data:`SHELL_RECORDED` types are left out.
    """
    out: list[tuple[c.Command, c.Event | None]] = []
    i = 0
    while i < len(commands):
        command = commands[i]
        following = commands[i + 1] if i + 1 < len(commands) else None
        if isinstance(following, c.Event) and _describes(command, following):
            out.append((command, following))
            i += 2
            continue
        if not (isinstance(command, c.Event) and command.type in SHELL_RECORDED):
            out.append((command, None))
        i += 1
    return out


def _describes(command: c.Command, event: c.Event) -> bool:
    if isinstance(command, c.SetHostStatus):
        return event.host == command.host and event.vm is None and event.type.startswith("HOST_")
    kinds = _ROW_EVENTS.get(type(command))
    if kinds is None:
        return False
    return event.vm == getattr(command, "vm", None) and event.type in kinds
