"""Pure: reconcile what a host reports about its VMs with what the engine believes.

oVirt's ``VmsMonitoring`` in one function. The shell hands :func:`reconcile` the host's reports
(one ``VM_status`` event, or the whole of ``Host.getAllVmStats``) and the engine's view of the VMs
concerned; it returns the actions that bring the engine's view in line, each with a reason for
the audit log. The host is the truth about what runs on it; the engine never destroys a running
VM it does not know (an *external* VM is recorded, not touched).

The rules, per report:

- a VM the engine does not know, not Down: **record it as external**; Down: ignore it;
- a known VM reported Down on the host the engine has it on: **apply** Down (the exit reason
  comes with it), then **clear** it from the host (``VM.destroy`` on a Down VM only forgets it);
  reported Down anywhere else, or Down with exit reason 4 (migrated away: its destination reports
  it): only clear it;
- a known VM reported running on the host the engine has it on: **apply** the status if it
  changed and the report is not older than the engine's (``notify_time`` order);
- a known VM reported running on another host than the engine's (Down in the engine, or on
  another host, or arriving by migration once Up there): **apply** it as **moved** to this host
  (the shell writes it unconditionally: notify clocks are per host).

And, when the reports are the host's complete list: a VM the engine has on this host, not Down,
that the host does not report and that is not being started right now, is **missing**: it is
Down (the host lost it: an agent restart on a non-persistent hypervisor, a crash).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.store.rows import VmStatus

#: VDSM's exit reason of a VM that migrated away (its destination now runs it).
EXIT_MIGRATION_SUCCEEDED = 4


@dataclass(frozen=True, slots=True)
class VmReport:
    """
    One VM as a host reports it.

    :ivar vm_id: the VM's id.
    :ivar status: its status, in the engine's names.
    :ivar time: the agent's event time of this status (``notify_time`` of an event,
        ``statusTime`` of a poll), or None when unknown.
    :ivar name: the VM's name on the host.
    :ivar exit_code: Down only: 0 normal, 1 error.
    :ivar exit_reason: Down only: VDSM's exit reason number.
    :ivar exit_message: Down only: why, in words.
    """

    vm_id: str
    status: VmStatus
    time: int | None = None
    name: str = ""
    exit_code: int | None = None
    exit_reason: int | None = None
    exit_message: str | None = None


@dataclass(frozen=True, slots=True)
class KnownVm:
    """
    One VM as the engine believes it.

    :ivar vm_id: the VM's id.
    :ivar status: its status in the engine.
    :ivar run_on_host: the host id it runs on, or None.
    :ivar migrating_to_host: the host id it is migrating to, or None.
    :ivar last_notify_time: the event time of its status, or None when the engine set it.
    :ivar external: found on a host rather than defined through the engine.
    """

    vm_id: str
    status: VmStatus
    run_on_host: str | None = None
    migrating_to_host: str | None = None
    last_notify_time: int | None = None
    external: bool = False


@dataclass(frozen=True, slots=True)
class ApplyStatus:
    """Write the reported status; ``moved``: the VM now runs on the reporting host."""

    vm_id: str
    report: VmReport
    reason: str
    moved: bool = False


@dataclass(frozen=True, slots=True)
class MarkMissing:
    """The host does not have a VM the engine has on it: the VM is Down."""

    vm_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RecordExternal:
    """Record a VM the engine does not know, as found on the host (never destroy it)."""

    vm_id: str
    report: VmReport
    reason: str


@dataclass(frozen=True, slots=True)
class ClearDown:
    """Ask the host to forget a Down VM (``VM.destroy``)."""

    vm_id: str
    reason: str


Action = ApplyStatus | MarkMissing | RecordExternal | ClearDown


def is_stale(report: VmReport, known: KnownVm) -> bool:
    """:returns: whether the report is older than the status the engine holds."""
    return (
        report.time is not None
        and known.last_notify_time is not None
        and report.time < known.last_notify_time
    )


def _down(host_id: str, report: VmReport, known: KnownVm) -> list[Action]:
    clear: list[Action] = [] if known.external else [ClearDown(report.vm_id, "Down on the host")]
    if known.run_on_host != host_id or report.exit_reason == EXIT_MIGRATION_SUCCEEDED:
        return clear
    if known.status is VmStatus.DOWN or is_stale(report, known):
        return clear
    why = report.exit_message or "Down"
    return [ApplyStatus(report.vm_id, report, f"reported Down: {why}"), *clear]


def _running(host_id: str, report: VmReport, known: KnownVm) -> list[Action]:
    if known.run_on_host == host_id:
        if report.status is known.status or is_stale(report, known):
            return []
        return [ApplyStatus(report.vm_id, report, f"reported {report.status}")]
    if known.migrating_to_host == host_id:
        if report.status is not VmStatus.UP:
            return []
        return [ApplyStatus(report.vm_id, report, "migration arrived: Up", moved=True)]
    where = "Down in the engine" if known.run_on_host is None else "on another host"
    reason = f"reported {report.status} on this host while {where}"
    return [ApplyStatus(report.vm_id, report, reason, moved=True)]


def _one(host_id: str, report: VmReport, known: KnownVm | None) -> list[Action]:
    if known is None:
        if report.status is VmStatus.DOWN:
            return []
        reason = f"found {report.status} on the host but not defined in the engine"
        return [RecordExternal(report.vm_id, report, reason)]
    if report.status is VmStatus.DOWN:
        return _down(host_id, report, known)
    return _running(host_id, report, known)


def reconcile(
    host_id: str,
    reports: Sequence[VmReport],
    known: Mapping[str, KnownVm],
    *,
    complete: bool,
    starting: Iterable[str] = (),
) -> list[Action]:
    """
    The actions that bring the engine's view of a host's VMs in line with the host's reports.

    :param host_id: the reporting host.
    :param reports: what it reports; a VM reported twice counts once (the last report).
    :param known: the engine's view of every reported VM it knows and of every VM it has on
        this host (more is harmless).
    :param complete: the reports are the host's whole VM list (a poll), so a VM the engine has
        on the host and the host does not report is missing.
    :param starting: VMs being started on this host right now (``VM.create`` in flight): never
        missing.
    :returns: the actions, in report order, then the missing VMs by id.
    """
    latest = {r.vm_id: r for r in reports}
    actions: list[Action] = []
    for vm_id, report in latest.items():
        actions.extend(_one(host_id, report, known.get(vm_id)))
    if complete:
        skip = set(latest) | set(starting)
        for vm_id in sorted(known):
            vm = known[vm_id]
            if vm_id in skip or vm.run_on_host != host_id or vm.status is VmStatus.DOWN:
                continue
            if vm.external:
                reason = "external VM no longer on the host"
            else:
                reason = f"the host does not have it (it was {vm.status})"
            actions.append(MarkMissing(vm_id, reason))
    return actions
