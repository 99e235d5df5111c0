"""Pure: scheduler filters, the hard constraints that refuse a host for a VM.

A filter is a small object with a ``name`` and one method, ``refusal(vm, host, policy)``, which
returns None when the host may run the VM and otherwise one sentence saying why not, with the
numbers (the text goes into the decision's per-host explanation and the event log, oVirt's
``PerHostMessages``). Filters look at one host at a time, so a decision costs hosts × filters.

The host a filter sees already includes every pending reservation of the ledger (see
:func:`engine.decide.model.with_pending`). Filters are registered under the entry-point
namespace ``vdsmlike.engine.filters`` and loaded by name (:mod:`engine.decide.plugins`):

=================== ================================================= ======================
name                refuses a host that…                              oVirt unit
=================== ================================================= ======================
``status``          is not Up                                         (host status check)
``excluded``        is the VM's current host, or one it must avoid    Migration, blacklist
``pinning``         is not the host the VM is pinned to               PinToHost
``cpu``             has fewer CPUs than the VM has vCPUs              CPU
``memory``          cannot promise the VM's memory under overcommit   Memory
``cpu_overloaded``  stays above HighUtilization for the duration      CPUOverloaded
``vm_affinity``     breaks a hard VM↔VM affinity rule                 VmAffinityGroups
``host_affinity``   breaks a hard VM→host affinity rule               VmToHostsAffinityGroups
=================== ================================================= ======================

A filter may also have ``applies(vm) -> bool``: when it says False the scheduler skips the filter
for that VM and leaves it out of the explanation (the affinity filters apply only to VMs in
groups, so a VM without groups is explained exactly as before they existed).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from . import affinity
from .model import HOST_UP, HostView, VmRequest, memory_capacity_mib, schedulable_memory_mib
from .policies import Policy


@runtime_checkable
class HostFilter(Protocol):
    """The shape of a filter plugin (documentation and type hints; nothing inherits from it)."""

    #: The filter's entry-point name, used in explanations.
    name: str

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """
        :param vm: the VM to place.
        :param host: the candidate host, pending reservations included.
        :param policy: the cluster policy, for its parameters and memory overcommit.
        :returns: None if ``host`` may run ``vm``, else why not, with numbers.
        """


class StatusFilter:
    """Only Up hosts run new VMs (Maintenance, NonResponsive, Connecting... are refused)."""

    name = "status"

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: why a host that is not Up cannot run VMs, or None."""
        if host.status == HOST_UP:
            return None
        return f"host status is {host.status}; only {HOST_UP} hosts run VMs"


class ExcludedFilter:
    """Never the VM's current host (a migration must move it) nor a host the request avoids."""

    name = "excluded"

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: why the request itself rules the host out, or None."""
        if host.id == vm.current_host:
            return "the VM runs on this host now; a migration needs another one"
        if host.id in vm.avoid_hosts:
            return "excluded for this request (an earlier attempt failed here)"
        return None


class PinningFilter:
    """A VM pinned to a host runs only there."""

    name = "pinning"

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: why a pinned VM cannot use another host, or None."""
        if vm.pinned_host is None or vm.pinned_host == host.id:
            return None
        return f"the VM is pinned to host {vm.pinned_host!r}"


class CpuFilter:
    """A VM's vCPUs must not outnumber the host's CPUs (oVirt's CPU filter)."""

    name = "cpu"

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: why the host has too few CPUs, or None."""
        if vm.vcpus <= host.cpus:
            return None
        return f"the VM has {vm.vcpus} vCPUs, the host only {host.cpus} CPUs"


class MemoryFilter:
    """
    The host must still be able to promise the VM's memory (oVirt's Memory filter):
    physical × overcommit% / 100 − committed − reserved − pending ≥ the VM's memory.
    """

    name = "memory"

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: why the VM's memory does not fit, with the whole sum, or None."""
        ratio = policy.memory_over_commit_percent
        free = schedulable_memory_mib(host, ratio)
        if vm.memory_mib <= free:
            return None
        return (
            f"the VM needs {vm.memory_mib} MiB, the host can promise {max(free, 0)} MiB "
            f"({host.memory_total_mib} MiB × {ratio}% overcommit = "
            f"{memory_capacity_mib(host, ratio)} MiB − {host.memory_committed_mib} committed − "
            f"{host.memory_reserved_mib} reserved − {host.pending_memory_mib} pending)"
        )


class CpuOverloadedFilter:
    """
    Refuse a host whose CPU load has stayed above HighUtilization for
    CpuOverCommitDurationMinutes (oVirt's CPUOverloaded); a short spike does not count.
    """

    name = "cpu_overloaded"

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: why the host counts as overloaded, or None."""
        p = policy.parameters
        if host.cpu_load_percent <= p.high_utilization:
            return None
        if host.cpu_over_commit_seconds < p.duration_seconds:
            return None
        return (
            f"CPU load {host.cpu_load_percent:.1f}% > HighUtilization "
            f"{p.high_utilization}% for {host.cpu_over_commit_seconds:.0f} s "
            f"(limit {p.duration_seconds:.0f} s)"
        )


class VmAffinityFilter:
    """
    Hard VM↔VM affinity (oVirt's VmAffinityGroups filter): refuse a host holding a member of a
    hard *apart* group, and any host but the one(s) holding the most members of a hard
    *together* group. Members are where :attr:`VmRequest.affinity_peers` says.
    """

    name = "vm_affinity"

    def applies(self, vm: VmRequest) -> bool:
        """:returns: whether ``vm`` is in a hard group with a VM↔VM rule and a running peer."""
        return bool(vm.affinity_peers) and any(g.hard and g.has_vm_rule for g in vm.affinity_groups)

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: the group and the members that rule the host out, or None."""
        return affinity.vm_rule_refusal(vm, host.id, hard=True)


class HostAffinityFilter:
    """Hard VM→host affinity (oVirt's VmToHostsAffinityGroups filter): only on, or never on."""

    name = "host_affinity"

    def applies(self, vm: VmRequest) -> bool:
        """:returns: whether ``vm`` is in a hard group with a VM→host rule."""
        return any(g.host_rule_hard and g.has_host_rule for g in vm.affinity_groups)

    def refusal(self, vm: VmRequest, host: HostView, policy: Policy) -> str | None:
        """:returns: the group whose host rule rules the host out, or None."""
        return affinity.host_rule_refusal(vm, host.id, hard=True)
