"""Pure: host utilization under a cluster policy, what a balancer reads.

:func:`classify` says which hosts are over- or under-utilized under a policy, by CPU and by
memory, and which are sources and destinations of the balancer's CPU and memory passes, each
with its reason. :func:`cpu_band_since` and :func:`cpu_over_commit_seconds` track how long a
host has been in a CPU band, which oVirt's ``CpuOverCommitDurationMinutes`` needs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from .model import HOST_UP, HostView, schedulable_memory_mib
from .policies import Policy, PolicyError, PolicyParameters


class CpuBand(enum.Enum):
    """Where a host's CPU load lies relative to the policy's [Low, High] band."""

    UNDER = "under"
    NORMAL = "normal"
    OVER = "over"


def cpu_band(load_percent: float, parameters: PolicyParameters) -> CpuBand:
    """:returns: OVER at or above HighUtilization, UNDER below LowUtilization, else NORMAL."""
    if load_percent >= parameters.high_utilization:
        return CpuBand.OVER
    if load_percent < parameters.low_utilization:
        return CpuBand.UNDER
    return CpuBand.NORMAL


def cpu_band_since(
    previous: tuple[CpuBand, float] | None,
    load_percent: float,
    parameters: PolicyParameters,
    now: float,
) -> tuple[CpuBand, float]:
    """
    Keep oVirt's ``cpu_over_commit_time_stamp`` per host, one sample at a time.

    Unlike oVirt, a jump from under to over restarts the clock, so a duration always measures
    one side of the band.

    :param previous: the band and since-when from the last sample, or None for the first.
    :param load_percent: the new CPU load sample.
    :param now: the sample's (virtual) time in seconds.
    :returns: the current band and the time the host entered it.
    """
    band = cpu_band(load_percent, parameters)
    if previous is not None and previous[0] is band:
        return previous
    return band, now


def cpu_over_commit_seconds(band_since: tuple[CpuBand, float], now: float) -> float:
    """:returns: the value for :attr:`HostView.cpu_over_commit_seconds`: 0 inside the band."""
    band, since = band_since
    return 0.0 if band is CpuBand.NORMAL else max(0.0, now - since)


# -- classification for balancers -----------------------------------------------------------


def cpu_over_utilized(host: HostView, parameters: PolicyParameters) -> str | None:
    """
    :returns: why the host is CPU-over-utilized (a balancing source), or None: load at or
        above HighUtilization for the duration, or vCPUs at the vCPU:CPU ratio, with ≥ 1 VM.
    """
    if host.vm_count < 1:
        return None
    p = parameters
    if host.cpu_load_percent >= p.high_utilization and (
        host.cpu_over_commit_seconds >= p.duration_seconds
    ):
        return (
            f"CPU over-utilized: load {host.cpu_load_percent:.1f}% ≥ HighUtilization "
            f"{p.high_utilization}% for {host.cpu_over_commit_seconds:.0f} s "
            f"(≥ {p.duration_seconds:.0f} s), {host.vm_count} VMs"
        )
    vcpus = host.vcpus_committed + host.pending_vcpus
    ratio = p.vcpu_to_physical_cpu_ratio
    if ratio > 0 and host.cpus > 0 and vcpus / host.cpus >= ratio:
        return (
            f"CPU over-utilized: {vcpus} vCPUs on {host.cpus} CPUs, ratio "
            f"{vcpus / host.cpus:.2f} ≥ VCpuToPhysicalCpuRatio {ratio:g}"
        )
    return None


def cpu_under_utilized(host: HostView, parameters: PolicyParameters) -> str | None:
    """:returns: why the host is CPU-under-utilized (below LowUtilization for the duration)."""
    p = parameters
    if host.cpu_load_percent < p.low_utilization and (
        host.cpu_over_commit_seconds >= p.duration_seconds
    ):
        return (
            f"CPU under-utilized: load {host.cpu_load_percent:.1f}% < LowUtilization "
            f"{p.low_utilization}% for {host.cpu_over_commit_seconds:.0f} s "
            f"(≥ {p.duration_seconds:.0f} s)"
        )
    return None


def memory_over_utilized(host: HostView, policy: Policy) -> str | None:
    """
    :returns: why the host is memory-over-utilized: schedulable memory below
        MaxFreeMemoryForOverUtilized with more than one VM; None when that limit is off.
    """
    limit = policy.parameters.max_free_memory_for_over_utilized
    free = schedulable_memory_mib(host, policy.memory_over_commit_percent)
    if limit is None or free >= limit or host.vm_count <= 1:
        return None
    return (
        f"memory over-utilized: {free} MiB schedulable < MaxFreeMemoryForOverUtilized "
        f"{limit} MiB, {host.vm_count} VMs"
    )


def memory_under_utilized(host: HostView, policy: Policy) -> str | None:
    """
    :returns: why the host is memory-under-utilized: schedulable memory above
        MinFreeMemoryForUnderUtilized; None when that limit is off.
    """
    limit = policy.parameters.min_free_memory_for_under_utilized
    free = schedulable_memory_mib(host, policy.memory_over_commit_percent)
    if limit is None or free <= limit:
        return None
    return (
        f"memory under-utilized: {free} MiB schedulable > MinFreeMemoryForUnderUtilized {limit} MiB"
    )


@dataclass(frozen=True)
class Utilization:
    """
    How a policy sees each Up host, for the balancer. Ids are ordered as the balancer should try
    them; ties break on host name, then id.

    :ivar policy: the policy's name.
    :ivar over_utilized: CPU-over-utilized hosts, most loaded first.
    :ivar under_utilized: CPU-under-utilized hosts, least loaded first.
    :ivar memory_over_utilized: memory-over-utilized hosts, least schedulable memory first.
    :ivar memory_under_utilized: memory-under-utilized hosts, most schedulable memory first.
    :ivar sources: hosts the balancer's first (CPU or VM-count) pass takes a VM from.
    :ivar destinations: hosts that pass may move it to.
    :ivar memory_sources: hosts the second (memory) pass takes a VM from.
    :ivar memory_destinations: hosts that pass may move it to.
    :ivar explanations: host id → the reasons behind its roles (empty list: nothing to say).
    """

    policy: str
    over_utilized: tuple[str, ...] = ()
    under_utilized: tuple[str, ...] = ()
    memory_over_utilized: tuple[str, ...] = ()
    memory_under_utilized: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()
    memory_sources: tuple[str, ...] = ()
    memory_destinations: tuple[str, ...] = ()
    explanations: dict[str, list[str]] = field(default_factory=dict)


def _ids(hosts: Iterable[HostView], key: Callable[[HostView], object]) -> tuple[str, ...]:
    return tuple(h.id for h in sorted(hosts, key=lambda h: (key(h), h.name, h.id)))


def _load(host: HostView) -> float:
    return host.cpu_load_percent


def _neg_load(host: HostView) -> float:
    return -host.cpu_load_percent


def classify(hosts: Iterable[HostView], policy: Policy) -> Utilization:
    """
    Classify a cluster's hosts the way the policy's balancer will (oVirt's
    ``CpuAndMemoryBalancingPolicyUnit`` and its subclasses). Only Up hosts take part.

    :returns: the roles of each host, empty for a policy without a balancer.
    """
    hosts = list(hosts)
    explanations: dict[str, list[str]] = {h.id: [] for h in hosts}
    for h in hosts:
        if h.status != HOST_UP:
            explanations[h.id].append(f"host status is {h.status}: not balanced")
    if policy.balancer is None:
        for notes in explanations.values():
            notes.append(f"policy {policy.name!r} does not balance")
        return Utilization(policy.name, explanations=explanations)
    up = [h for h in hosts if h.status == HOST_UP]
    classified = _classify_up(up, policy, explanations)
    return replace(classified, explanations=explanations)


def _noted(
    hosts: list[HostView], test: Callable[[HostView], str | None], notes: dict[str, list[str]]
) -> list[HostView]:
    chosen = []
    for h in hosts:
        reason = test(h)
        if reason is not None:
            notes[h.id].append(reason)
            chosen.append(h)
    return chosen


def _classify_up(up: list[HostView], policy: Policy, notes: dict[str, list[str]]) -> Utilization:
    p = policy.parameters
    groups = _Groups(
        over=_noted(up, lambda h: cpu_over_utilized(h, p), notes),
        under=_noted(up, lambda h: cpu_under_utilized(h, p), notes),
        mem_over=_noted(up, lambda h: memory_over_utilized(h, policy), notes),
        mem_under=_noted(up, lambda h: memory_under_utilized(h, policy), notes),
    )
    base = Utilization(
        policy.name,
        over_utilized=_ids(groups.over, _neg_load),
        under_utilized=_ids(groups.under, _load),
        memory_over_utilized=_ids(groups.mem_over, _free_key(policy)),
        memory_under_utilized=_ids(groups.mem_under, _neg_free_key(policy)),
    )
    roles = _ROLES.get(policy.balancer or "")
    if roles is None:
        known = ", ".join(_ROLES)
        raise PolicyError(f"unknown balancer {policy.balancer!r} (known: {known})")
    return roles(up, base, policy, groups, notes)


@dataclass(frozen=True, slots=True)
class _Groups:
    over: list[HostView]
    under: list[HostView]
    mem_over: list[HostView]
    mem_under: list[HostView]


def _free_key(policy: Policy) -> Callable[[HostView], int]:
    return lambda h: schedulable_memory_mib(h, policy.memory_over_commit_percent)


def _neg_free_key(policy: Policy) -> Callable[[HostView], int]:
    return lambda h: -schedulable_memory_mib(h, policy.memory_over_commit_percent)


def _evenly_roles(
    up: list[HostView],
    base: Utilization,
    policy: Policy,
    g: _Groups,
    notes: dict[str, list[str]],
) -> Utilization:
    """oVirt's evenly_distributed: relieve hot hosts onto cool ones, then memory-tight ones."""
    over_ids = {h.id for h in g.over}
    limit = policy.parameters.destination_threshold
    targets = [h for h in up if h.id not in over_ids and h.cpu_load_percent < limit]
    for h in targets:
        notes[h.id].append(f"CPU destination: load {h.cpu_load_percent:.1f}% < {limit:g}%")
    mem_over_ids = {h.id for h in g.mem_over}
    return replace(
        base,
        sources=base.over_utilized,
        destinations=_ids(targets, _load),
        memory_sources=base.memory_over_utilized,
        memory_destinations=tuple(i for i in base.memory_under_utilized if i not in mem_over_ids),
    )


def _power_saving_roles(
    up: list[HostView],
    base: Utilization,
    policy: Policy,
    g: _Groups,
    notes: dict[str, list[str]],
) -> Utilization:
    """oVirt's power_saving: relieve hot hosts and empty idle ones onto the fullest others."""
    high = policy.parameters.high_utilization
    to_empty = [h for h in g.under if h.vm_count >= 1]
    busy = {h.id for h in g.over} | {h.id for h in g.under}
    targets = [h for h in up if h.id not in busy and h.cpu_load_percent < high]
    for h in targets:
        notes[h.id].append(f"CPU destination: load {h.cpu_load_percent:.1f}% < {high}%")
    mem_to_empty = [h for h in g.mem_under if h.vm_count >= 1]
    mem_busy = {h.id for h in g.mem_over} | {h.id for h in g.mem_under}
    p = policy.parameters
    memory_on = (
        p.max_free_memory_for_over_utilized is not None
        or p.min_free_memory_for_under_utilized is not None
    )
    mem_targets = [h for h in up if h.id not in mem_busy] if memory_on else []
    return replace(
        base,
        sources=base.over_utilized + _ids(to_empty, lambda h: (h.vm_count, h.cpu_load_percent)),
        destinations=_ids(targets, _neg_load),
        memory_sources=base.memory_over_utilized + _ids(mem_to_empty, lambda h: h.vm_count),
        memory_destinations=_ids(mem_targets, _free_key(policy)),
    )


def _vm_even_roles(
    up: list[HostView],
    base: Utilization,
    policy: Policy,
    g: _Groups,
    notes: dict[str, list[str]],
) -> Utilization:
    """oVirt's vm_evenly_distributed: move VMs from crowded hosts to ones with far fewer."""
    if not up:
        return base
    p = policy.parameters

    def count(h: HostView) -> int:
        return h.vm_count + h.pending_vms

    fewest = min(count(h) for h in up)
    sources = [
        h for h in up if count(h) >= p.high_vm_count and count(h) - fewest >= p.migration_threshold
    ]
    if not sources:
        return base
    most = max(count(h) for h in sources)
    targets = [h for h in up if count(h) <= most - p.migration_threshold]
    for h in sources:
        notes[h.id].append(
            f"VM-count source: {count(h)} VMs ≥ HighVmCount {p.high_vm_count}, "
            f"{count(h) - fewest} more than the emptiest host (≥ MigrationThreshold "
            f"{p.migration_threshold})"
        )
    for h in targets:
        notes[h.id].append(
            f"VM-count destination: {count(h)} VMs ≤ {most} − MigrationThreshold "
            f"{p.migration_threshold}"
        )
    return replace(
        base,
        sources=_ids(sources, lambda h: -count(h)),
        destinations=_ids(targets, count),
    )


_Roles = Callable[[list[HostView], Utilization, Policy, _Groups, dict[str, list[str]]], Utilization]
_ROLES: Mapping[str, _Roles] = {
    "evenly_distributed": _evenly_roles,
    "power_saving": _power_saving_roles,
    "vm_evenly_distributed": _vm_even_roles,
}
