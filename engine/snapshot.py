"""Pure: the scheduler's snapshot, built from the engine's rows.

:func:`host_view` turns one host (its latest row, its live state, the VMs on it) into the
scheduler's ``HostView``; :func:`vm_request` turns a VM definition into a ``VmRequest``.
Memory promised to VMs still holding a reservation in the pending ledger is left out of the
host's committed memory (the ledger counts it), so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from uuid import UUID

from .decide.model import HostView, VmRequest
from .store.rows import Host, Vm, VmStatic
from .wire import reserved_memory_mib


def host_view(
    host: Host,
    state: str,
    vms: Iterable[Vm],
    *,
    pending: Collection[str] = (),
    cpu_over_commit_seconds: float = 0.0,
) -> HostView:
    """
    One host as the scheduler sees it.

    :param host: the host's latest row (capabilities, sizes, statistics).
    :param state: its live state (the host state machine's, e.g. ``"Up"``).
    :param vms: the VMs running on or migrating to it.
    :param pending: ids of VMs holding a pending reservation (not counted as committed).
    :param cpu_over_commit_seconds: how long its load has been outside the policy's band.
    """
    committed = vcpus = count = 0
    for vm in vms:
        count += 1
        vcpus += vm.static.vcpus
        if str(vm.id) not in pending:
            committed += vm.static.mem_mib
    dynamic, statistics = host.dynamic, host.statistics
    idle = statistics.cpu_idle if statistics is not None else None
    free = statistics.mem_free_mib if statistics is not None else None
    return HostView(
        id=str(host.id),
        name=host.name,
        status=state,
        cpus=dynamic.cpu_count or 0,
        memory_total_mib=dynamic.mem_total_mib or 0,
        memory_free_mib=free or 0,
        memory_committed_mib=committed,
        memory_reserved_mib=reserved_memory_mib(dynamic.capabilities),
        cpu_load_percent=0.0 if idle is None else max(0.0, min(100.0, 100.0 - idle)),
        vm_count=count,
        vcpus_committed=vcpus,
        cpu_over_commit_seconds=cpu_over_commit_seconds,
    )


def vm_request(
    vm: VmStatic,
    *,
    only_host: UUID | None = None,
    current_host: UUID | None = None,
) -> VmRequest:
    """
    A VM to place.

    :param only_host: the host an admin chose for this start or migration (it narrows the VM's
        own pinning; the caller refuses a choice that contradicts it).
    :param current_host: where the VM runs now (a migration: never a destination).
    """
    pinned = only_host or vm.pinned_host
    return VmRequest(
        id=str(vm.id),
        name=vm.name,
        memory_mib=vm.mem_mib,
        vcpus=vm.vcpus,
        pinned_host=None if pinned is None else str(pinned),
        ha_priority=vm.ha_priority,
        current_host=None if current_host is None else str(current_host),
    )


def refusal_text(summary: str) -> str:
    """:returns: a decision's multi-line summary as one line: the head, then each host."""
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} — " + " | ".join(lines[1:])
