"""Pure: the scheduler's snapshot, built from the engine's rows.

:func:`host_view` turns one host (its latest row, its live state, the load of the VMs on it,
:func:`load_of`) into the scheduler's ``HostView``; :func:`vm_request` turns a VM definition
into a ``VmRequest``.
Memory promised to VMs still holding a reservation in the pending ledger is left out of the
host's committed memory (the ledger counts it), so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from uuid import UUID

from .decide.model import HostView, VmRequest
from .store.rows import Host, VmStatic
from .wire import reserved_memory_mib


@dataclass(frozen=True, slots=True)
class Load:
    """
    What a host's VMs take: memory promised to them (committed), their vCPUs and their count.

    :ivar committed_mib: memory of the VMs on the host, except those still holding a pending
        reservation (the ledger counts those).
    """

    committed_mib: int = 0
    vcpus: int = 0
    vms: int = 0


def load_of(vms: Iterable[tuple[str, VmStatic]], pending: Container[str]) -> Load:
    """:returns: the load of a host's VMs, given as ``(id as text, definition)`` pairs."""
    committed = vcpus = count = 0
    for vm_id, static in vms:
        count += 1
        vcpus += static.vcpus
        if vm_id not in pending:
            committed += static.mem_mib
    return Load(committed, vcpus, count)


def host_view(
    host: Host, state: str, load: Load, *, cpu_over_commit_seconds: float = 0.0
) -> HostView:
    """
    One host as the scheduler sees it.

    :param host: the host's latest row (capabilities, sizes, statistics).
    :param state: its live state (the host state machine's, e.g. ``"Up"``).
    :param load: what its VMs take (:func:`load_of`).
    :param cpu_over_commit_seconds: how long its load has been outside the policy's band.
    """
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
        memory_committed_mib=load.committed_mib,
        memory_reserved_mib=reserved_memory_mib(dynamic.capabilities),
        cpu_load_percent=0.0 if idle is None else max(0.0, min(100.0, 100.0 - idle)),
        vm_count=load.vms,
        vcpus_committed=load.vcpus,
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
