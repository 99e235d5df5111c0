"""Pure: scheduler weights, the soft preferences that rank the hosts every filter let through.

A weight is a small object with a ``name`` and one method, ``weigh(vm, host, policy)``, returning
a :class:`Weighing`: a value where **lower is better** (as in oVirt) and a sentence with the
numbers behind it. The scheduler turns each weight's values into ranks and sums factor × rank
(oVirt's ``RankSelector``); see :mod:`engine.decide.scheduler`.

The host a weight sees already includes the ledger's pending reservations, so VMs started at the
same moment spread out instead of piling onto the host that looked best a moment ago. Weights are
registered under ``vdsmlike.engine.weights``:

================ ======================================================= ===========================
name             prefers                                                 oVirt unit
================ ======================================================= ===========================
``free_memory``  the most memory left after the VM                       OptimalForMemoryEvenDistr.
``cpu_load``     the lowest predicted CPU load                           OptimalForCpuEvenDistr.
``vm_count``     the fewest VMs (running and starting)                   OptimalForEvenGuestDistr.
``pack_memory``  the least memory left after the VM (packing)            OptimalForMemoryPowerSaving
``pack_cpu``     the highest predicted load still within HighUtilization OptimalForCpuPowerSaving
``vm_affinity``  hosts that keep soft VM↔VM rules (members together/apart) VmAffinityGroups (soft)
``host_affinity`` hosts that keep soft VM→host rules                     VmToHostsAffinityGroups
================ ======================================================= ===========================

A weight may also have ``applies(vm) -> bool``: when it says False the scheduler skips it for
that VM (no ranks, no explanation line), so the affinity weights change nothing for VMs outside
soft groups. Note that a rank selector favours few good hosts only weakly: a soft *together*
rule gains its host one rank × factor over the others, so a large load difference can still win
over it (as in oVirt); the balancer then gathers the group when that does not unbalance the
cluster (:mod:`engine.decide.balance`).

Predicted load is oVirt's: the host's load plus ``VcpuConsumptionPercentage`` (10 %) per vCPU
of the new VM and of the VMs still starting there, spread over the host's CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from . import affinity
from .model import HostView, VmRequest, schedulable_memory_mib
from .policies import Policy


@dataclass(frozen=True, slots=True)
class Weighing:
    """
    One weight's verdict on one host.

    :ivar value: the weight; lower is better. Only the order of values matters.
    :ivar detail: the numbers behind it, for the explanation.
    """

    value: float
    detail: str


@runtime_checkable
class HostWeight(Protocol):
    """The shape of a weight plugin (documentation and type hints; nothing inherits from it)."""

    #: The weight's entry-point name, used in policies and explanations.
    name: str

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """
        :param vm: the VM to place.
        :param host: a host that passed every filter, pending reservations included.
        :param policy: the cluster policy, for its parameters and memory overcommit.
        :returns: the host's weight for ``vm`` (lower is better) and why.
        """


def _memory_after(vm: VmRequest, host: HostView, policy: Policy) -> tuple[int, str]:
    free = schedulable_memory_mib(host, policy.memory_over_commit_percent)
    after = free - vm.memory_mib
    return after, f"{free} MiB schedulable, {after} MiB left after the VM"


def predicted_load(vm: VmRequest, host: HostView, policy: Policy) -> float:
    """
    :returns: the host's CPU load in percent once ``vm`` and the VMs pending there run: load +
        (new and pending vCPUs) × VcpuConsumptionPercentage / CPUs.
    """
    per_vcpu = policy.parameters.vcpu_consumption_percentage / max(host.cpus, 1)
    return host.cpu_load_percent + (vm.vcpus + host.pending_vcpus) * per_vcpu


def _load_detail(vm: VmRequest, host: HostView, policy: Policy, predicted: float) -> str:
    vcpus = f"{vm.vcpus} vCPUs"
    if host.pending_vcpus:
        vcpus = f"({vm.vcpus} + {host.pending_vcpus} pending) vCPUs"
    return (
        f"predicted load {predicted:.1f}% ({host.cpu_load_percent:.1f}% now + {vcpus} × "
        f"{policy.parameters.vcpu_consumption_percentage}% / {host.cpus} CPUs)"
    )


class FreeMemoryWeight:
    """Spread memory: prefer the host with the most schedulable memory left after the VM."""

    name = "free_memory"

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: minus the memory left, so more memory left ranks better."""
        after, detail = _memory_after(vm, host, policy)
        return Weighing(-after, detail)


class PackMemoryWeight:
    """Pack memory: prefer the host with the least schedulable memory left after the VM."""

    name = "pack_memory"

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: the memory left, so a fuller host ranks better."""
        after, detail = _memory_after(vm, host, policy)
        return Weighing(after, detail)


class CpuLoadWeight:
    """Spread CPU: prefer the host with the lowest predicted load."""

    name = "cpu_load"

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: the predicted load."""
        predicted = predicted_load(vm, host, policy)
        return Weighing(predicted, _load_detail(vm, host, policy, predicted))


class PackCpuWeight:
    """
    Pack CPU: prefer the most loaded host whose predicted load stays within HighUtilization;
    hosts that would go above it come last, least loaded first.
    """

    name = "pack_cpu"

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: the headroom below HighUtilization, or 1000 + the excess above it."""
        high = policy.parameters.high_utilization
        predicted = predicted_load(vm, host, policy)
        detail = _load_detail(vm, host, policy, predicted)
        if predicted <= high:
            return Weighing(high - predicted, f"{detail} ≤ HighUtilization {high}%")
        return Weighing(1000 + predicted - high, f"{detail} > HighUtilization {high}%")


class VmCountWeight:
    """Spread VMs: prefer the host running (or starting) the fewest VMs."""

    name = "vm_count"

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: running plus starting VMs."""
        total = host.vm_count + host.pending_vms
        return Weighing(total, f"{host.vm_count} VMs running, {host.pending_vms} starting")


class VmAffinityWeight:
    """
    Soft VM↔VM affinity: per soft group, priority × the members on the host, counted against
    the host for *apart* and for it for *together*.
    """

    name = "vm_affinity"

    def applies(self, vm: VmRequest) -> bool:
        """:returns: whether ``vm`` has a soft VM↔VM rule with a running peer."""
        return affinity.has_soft_vm_rules(vm)

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: the soft VM↔VM cost of the host (lower is better)."""
        cost, details = affinity.soft_vm_cost(vm, host.id)
        return Weighing(cost, "; ".join(details) or "no member of a soft group here")


class HostAffinityWeight:
    """Soft VM→host affinity: the priorities of the soft host rules the host would break."""

    name = "host_affinity"

    def applies(self, vm: VmRequest) -> bool:
        """:returns: whether ``vm`` has a soft VM→host rule."""
        return affinity.has_soft_host_rules(vm)

    def weigh(self, vm: VmRequest, host: HostView, policy: Policy) -> Weighing:
        """:returns: the soft VM→host cost of the host (lower is better)."""
        cost, details = affinity.soft_host_cost(vm, host.id)
        return Weighing(cost, "; ".join(details) or "keeps every soft host rule")
