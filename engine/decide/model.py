"""Pure: the snapshot the scheduler takes, a view of each host and the VM to place.

The shell builds these from the store (host static/dynamic/statistics rows, VM static rows) at
the moment it asks for a decision; nothing here changes afterwards. Memory is in MiB and CPU load
in percent of the whole host, as oVirt's ``vds_dynamic`` / ``vds_statistics`` hold them.

Memory a host can still promise (oVirt's ``max_scheduling_memory``) is computed in one place,
:func:`schedulable_memory_mib`, and every filter, weight and classification uses it::

    physical × overcommit% / 100 − committed − reserved − pending
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .affinity import AffinityGroup, Peer

#: The only host status that runs new VMs (oVirt's ``VDSStatus.Up``). Host states are strings
#: so that the engine's host-state enum (a ``StrEnum``) compares equal to them.
HOST_UP = "Up"


@dataclass(frozen=True, slots=True)
class HostView:
    """
    One host as the scheduler sees it.

    :ivar id: the host's id (the key of every per-host result).
    :ivar name: the host's unique display name (ties between equal hosts break on it).
    :ivar status: the engine's host status, e.g. ``"Up"``, ``"Maintenance"``.
    :ivar cpus: schedulable CPUs (threads or cores, as the cluster counts them).
    :ivar memory_total_mib: physical memory.
    :ivar memory_free_mib: free memory as last reported by the agent (informational: the
        scheduler counts promises, not the reported figure, which ballooning and KSM move).
    :ivar memory_committed_mib: memory promised to the VMs the host runs (their defined memory,
        plus any per-VM overhead the shell adds), oVirt's ``mem_commited``.
    :ivar memory_reserved_mib: memory kept for the host itself (oVirt's ``reserved_mem``).
    :ivar pending_memory_mib: memory of VMs being started or migrated there that the snapshot
        already knows about (e.g. restored after an engine restart). The in-process
        :class:`~engine.decide.scheduler.PendingResources` ledger adds its own on top: never copy
        ledger amounts into this field.
    :ivar pending_vcpus: vCPUs of those VMs.
    :ivar pending_vms: the number of those VMs.
    :ivar cpu_load_percent: CPU load of the whole host, 0–100.
    :ivar vm_count: VMs running there.
    :ivar vcpus_committed: vCPUs of the VMs running there (for the vCPU:CPU ratio trigger).
    :ivar cpu_over_commit_seconds: how long the CPU load has stayed on its current side outside
        the policy's [LowUtilization, HighUtilization] band, as of the snapshot; 0 while inside.
        oVirt keeps the start as ``cpu_over_commit_time_stamp``; the shell keeps it with
        :func:`engine.decide.utilization.cpu_band_since` and passes the duration.
    """

    id: str
    name: str
    status: str
    cpus: int
    memory_total_mib: int
    memory_free_mib: int
    memory_committed_mib: int = 0
    memory_reserved_mib: int = 0
    pending_memory_mib: int = 0
    pending_vcpus: int = 0
    pending_vms: int = 0
    cpu_load_percent: float = 0.0
    vm_count: int = 0
    vcpus_committed: int = 0
    cpu_over_commit_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class VmRequest:
    """
    A VM to place: what it needs and where it may go.

    :ivar id: the VM's id.
    :ivar name: the VM's display name.
    :ivar memory_mib: memory the VM is promised (with any overhead the shell counts).
    :ivar vcpus: virtual CPUs.
    :ivar pinned_host: the id of the only host the VM may run on, or None.
    :ivar ha_priority: oVirt's VM priority, 0–100; higher starts first (see
        :func:`engine.decide.scheduler.start_order`).
    :ivar current_host: the host the VM runs on now when it is being migrated (never a
        destination), or None for a start.
    :ivar avoid_hosts: hosts this request must not use, e.g. where an earlier attempt failed
        (oVirt reruns a failed start on another host).
    :ivar affinity_groups: the affinity groups the VM belongs to (empty: no rules apply).
    :ivar affinity_peers: where the other members of those groups run; build both with
        :func:`engine.decide.affinity.with_affinity`. The scheduler adds the members its ledger
        holds reservations for.
    """

    id: str
    name: str
    memory_mib: int
    vcpus: int
    pinned_host: str | None = None
    ha_priority: int = 0
    current_host: str | None = None
    avoid_hosts: frozenset[str] = field(default_factory=frozenset)
    affinity_groups: tuple[AffinityGroup, ...] = ()
    affinity_peers: tuple[Peer, ...] = ()


@dataclass(frozen=True, slots=True)
class HostPending:
    """
    Resources promised to VMs on their way to one host (an entry of the pending ledger).

    :ivar memory_mib: their memory.
    :ivar vcpus: their vCPUs.
    :ivar vms: how many they are.
    """

    memory_mib: int = 0
    vcpus: int = 0
    vms: int = 0

    def __add__(self, other: HostPending) -> HostPending:
        return HostPending(
            self.memory_mib + other.memory_mib, self.vcpus + other.vcpus, self.vms + other.vms
        )

    def __sub__(self, other: HostPending) -> HostPending:
        return HostPending(
            self.memory_mib - other.memory_mib, self.vcpus - other.vcpus, self.vms - other.vms
        )

    def __bool__(self) -> bool:
        return bool(self.memory_mib or self.vcpus or self.vms)


#: Nothing pending.
NO_PENDING = HostPending()


def with_pending(host: HostView, extra: HostPending) -> HostView:
    """
    :returns: ``host`` with ``extra`` added to its pending memory, vCPUs and VM count (the same
        object when ``extra`` is empty).
    """
    if not extra:
        return host
    return HostView(
        id=host.id,
        name=host.name,
        status=host.status,
        cpus=host.cpus,
        memory_total_mib=host.memory_total_mib,
        memory_free_mib=host.memory_free_mib,
        memory_committed_mib=host.memory_committed_mib,
        memory_reserved_mib=host.memory_reserved_mib,
        pending_memory_mib=host.pending_memory_mib + extra.memory_mib,
        pending_vcpus=host.pending_vcpus + extra.vcpus,
        pending_vms=host.pending_vms + extra.vms,
        cpu_load_percent=host.cpu_load_percent,
        vm_count=host.vm_count,
        vcpus_committed=host.vcpus_committed,
        cpu_over_commit_seconds=host.cpu_over_commit_seconds,
    )


def memory_capacity_mib(host: HostView, over_commit_percent: int) -> int:
    """:returns: the memory the host may promise in all: physical × overcommit% / 100, floored."""
    return host.memory_total_mib * over_commit_percent // 100


def schedulable_memory_mib(host: HostView, over_commit_percent: int) -> int:
    """
    :returns: memory the host can still promise to a new VM (negative when overbooked):
        capacity − committed − reserved − pending.
    """
    return (
        memory_capacity_mib(host, over_commit_percent)
        - host.memory_committed_mib
        - host.memory_reserved_mib
        - host.pending_memory_mib
    )
