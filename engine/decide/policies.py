"""Pure: cluster policies (filters, weights with factors, parameters) and host utilization.

A policy is oVirt's cluster policy (``InternalClusterPolicies.java``): which filters refuse hosts,
which weights rank the rest and with which integer factor, which balancer runs, and the parameters
those units read. The built-in ones, with oVirt's defaults:

============================ ============================= ===================== ===============
policy                       weights (factor)              balancer              parameters
============================ ============================= ===================== ===============
``none`` (the default)       cpu_load 2, free_memory 1     none                  High 80, 2 min
``evenly_distributed``       cpu_load 2, free_memory 1     evenly_distributed    + vCPU ratio,
                                                                                 memory limits
``power_saving``             pack_cpu 2, pack_memory 1     power_saving          + Low 20, reserve
``vm_evenly_distributed``    vm_count 2                    vm_evenly_distributed + VM counts
============================ ============================= ===================== ===============

Every built-in policy filters with ``status``, ``excluded``, ``pinning``, ``cpu``, ``memory`` and
``cpu_overloaded``; the first three are mandatory (:data:`MANDATORY_FILTERS`): the scheduler runs
them even when a policy leaves them out, as oVirt runs its mandatory policy units.

Parameters are set with oVirt's names (``HighUtilization``, ``CpuOverCommitDurationMinutes``, ...)
and validated against oVirt's ranges; a policy refuses parameters it does not use. The cluster's
memory overcommit (oVirt's ``max_vds_memory_over_commit``, percent, default 100) travels with the
policy because every memory decision needs it.

The second half is what a balancer needs (issue 7): :func:`classify` says which hosts are over-
or under-utilized under a policy, by CPU and by memory, and which are sources and destinations
of the balancer's CPU and memory passes, each with its reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .model import HOST_UP, HostView, schedulable_memory_mib

#: Filters the scheduler always runs first, whatever the policy lists.
MANDATORY_FILTERS: tuple[str, ...] = ("status", "excluded", "pinning")

#: The filters of every built-in policy, in order.
DEFAULT_FILTERS: tuple[str, ...] = (*MANDATORY_FILTERS, "cpu", "memory", "cpu_overloaded")

#: The cluster's default memory overcommit, percent (oVirt's cluster default).
DEFAULT_MEMORY_OVER_COMMIT = 100


class PolicyError(ValueError):
    """An unknown policy, a parameter the policy does not take, or a value out of range."""


@dataclass(frozen=True, slots=True)
class PolicyParameters:
    """
    The parameters policy units read, with oVirt's built-in policy defaults.

    :ivar high_utilization: ``HighUtilization``, CPU % above which a host is over-utilized
        (50–99).
    :ivar low_utilization: ``LowUtilization``, CPU % below which a host is under-utilized
        (0–49; 0 turns it off).
    :ivar cpu_over_commit_duration_minutes: ``CpuOverCommitDurationMinutes``, how long the load
        must stay outside the band before a host counts as over- or under-utilized (≥ 1).
    :ivar vcpu_to_physical_cpu_ratio: ``VCpuToPhysicalCpuRatio``, a host is over-utilized when
        its vCPUs / CPUs reach it (0 turns it off).
    :ivar max_free_memory_for_over_utilized: ``MaxFreeMemoryForOverUtilized`` MiB, a host with
        less schedulable memory is memory-over-utilized (None turns it off).
    :ivar min_free_memory_for_under_utilized: ``MinFreeMemoryForUnderUtilized`` MiB, a host
        with more schedulable memory is memory-under-utilized (None turns it off).
    :ivar high_vm_count: ``HighVmCount``, hosts with fewer VMs are never VM-count sources.
    :ivar migration_threshold: ``MigrationThreshold``, the VM-count gap worth a migration (≥ 2).
    :ivar spm_vm_grace: ``SpmVmGrace``, extra VMs an SPM host counts as (kept for fidelity; our
        hosts have no SPM role).
    :ivar hosts_in_reserve: ``HostsInReserve``, empty hosts power saving keeps up.
    :ivar enable_automatic_host_power_management: ``EnableAutomaticHostPowerManagement``, let
        power saving put empty hosts into maintenance and power them off.
    :ivar vcpu_consumption_percentage: engine-wide ``VcpuConsumptionPercentage``, the load one
        vCPU is expected to add to a host with one CPU (used to predict load).
    :ivar utilization_threshold_percent: engine-wide ``UtilizationThresholdInPercent``, scales
        HighUtilization into the evenly-distributed destination threshold.
    """

    high_utilization: int = 80
    low_utilization: int = 0
    cpu_over_commit_duration_minutes: int = 2
    vcpu_to_physical_cpu_ratio: float = 0.0
    max_free_memory_for_over_utilized: int | None = None
    min_free_memory_for_under_utilized: int | None = None
    high_vm_count: int = 10
    migration_threshold: int = 5
    spm_vm_grace: int = 5
    hosts_in_reserve: int = 0
    enable_automatic_host_power_management: bool = False
    vcpu_consumption_percentage: int = 10
    utilization_threshold_percent: int = 80

    @property
    def duration_seconds(self) -> float:
        """:returns: ``CpuOverCommitDurationMinutes`` in seconds."""
        return self.cpu_over_commit_duration_minutes * 60.0

    @property
    def destination_threshold(self) -> float:
        """
        :returns: the CPU % under which a host receives VMs in an evenly distributed cluster:
            min(UtilizationThreshold × High / 100, High − VcpuConsumption), 64 with the defaults.
        """
        return min(
            self.utilization_threshold_percent * self.high_utilization / 100,
            self.high_utilization - self.vcpu_consumption_percentage,
        )


@dataclass(frozen=True, slots=True)
class _Spec:
    attribute: str
    parse: Callable[[object], object]
    low: float | None = None
    high: float | None = None


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"{value!r} is not true or false")


def _parse_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"{value!r} is not an integer")


def _parse_float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"{value!r} is not a number")


#: oVirt parameter name → attribute, parser and range (``PolicyUnitParameter.java``).
PARAMETERS: Mapping[str, _Spec] = {
    "HighUtilization": _Spec("high_utilization", _parse_int, 50, 99),
    "LowUtilization": _Spec("low_utilization", _parse_int, 0, 49),
    "CpuOverCommitDurationMinutes": _Spec("cpu_over_commit_duration_minutes", _parse_int, 1),
    "VCpuToPhysicalCpuRatio": _Spec("vcpu_to_physical_cpu_ratio", _parse_float, 0),
    "MaxFreeMemoryForOverUtilized": _Spec("max_free_memory_for_over_utilized", _parse_int, 1),
    "MinFreeMemoryForUnderUtilized": _Spec("min_free_memory_for_under_utilized", _parse_int, 1),
    "HighVmCount": _Spec("high_vm_count", _parse_int, 0),
    "MigrationThreshold": _Spec("migration_threshold", _parse_int, 2),
    "SpmVmGrace": _Spec("spm_vm_grace", _parse_int, 0),
    "HostsInReserve": _Spec("hosts_in_reserve", _parse_int, 0),
    "EnableAutomaticHostPowerManagement": _Spec(
        "enable_automatic_host_power_management", _parse_bool
    ),
}


def _parse(name: str, value: object) -> object:
    spec = PARAMETERS[name]
    try:
        parsed: Any = spec.parse(value)
    except (TypeError, ValueError) as e:
        raise PolicyError(f"parameter {name}: {e}") from None
    if spec.low is not None and parsed < spec.low:
        raise PolicyError(f"parameter {name}: {parsed} is below the minimum {spec.low:g}")
    if spec.high is not None and parsed > spec.high:
        raise PolicyError(f"parameter {name}: {parsed} is above the maximum {spec.high:g}")
    return parsed


@dataclass(frozen=True, slots=True)
class Policy:
    """
    A cluster policy ready to schedule with.

    :ivar name: the policy's name.
    :ivar filters: filter plugin names, in order (mandatory ones are added by the scheduler).
    :ivar weights: ``(weight plugin name, factor)`` pairs; a factor is a positive integer.
    :ivar balancer: the balancer's name, or None for no balancing.
    :ivar parameters: the values the units read.
    :ivar accepts: the oVirt parameter names this policy takes.
    :ivar memory_over_commit_percent: the cluster's memory overcommit (100 = none).
    """

    name: str
    filters: tuple[str, ...] = DEFAULT_FILTERS
    weights: tuple[tuple[str, int], ...] = ()
    balancer: str | None = None
    parameters: PolicyParameters = field(default_factory=PolicyParameters)
    accepts: frozenset[str] = frozenset()
    memory_over_commit_percent: int = DEFAULT_MEMORY_OVER_COMMIT

    def parameter_values(self) -> dict[str, object]:
        """:returns: the accepted parameters by oVirt name, for display and storage."""
        return {name: getattr(self.parameters, PARAMETERS[name].attribute) for name in self.accepts}

    def with_parameters(self, values: Mapping[str, object]) -> Policy:
        """
        :param values: oVirt parameter names to values (strings as stored, or numbers).
        :returns: a copy of this policy with ``values`` applied and validated.
        :raises PolicyError: for a name this policy does not take, a value out of range, or
            limits that contradict each other.
        """
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name not in self.accepts:
                known = ", ".join(sorted(self.accepts)) or "none"
                raise PolicyError(
                    f"policy {self.name!r} does not take parameter {name!r} (it takes: {known})"
                )
            changes[PARAMETERS[name].attribute] = _parse(name, value)
        parameters = replace(self.parameters, **changes)
        _check_consistent(parameters)
        return replace(self, parameters=parameters)


def _check_consistent(parameters: PolicyParameters) -> None:
    over = parameters.max_free_memory_for_over_utilized
    under = parameters.min_free_memory_for_under_utilized
    if over is not None and under is not None and under <= over:
        raise PolicyError(
            f"MinFreeMemoryForUnderUtilized ({under} MiB) must be above "
            f"MaxFreeMemoryForOverUtilized ({over} MiB)"
        )


_CPU = frozenset({"HighUtilization", "CpuOverCommitDurationMinutes"})
_MEMORY = frozenset({"MaxFreeMemoryForOverUtilized", "MinFreeMemoryForUnderUtilized"})
_EVEN_WEIGHTS = (("cpu_load", 2), ("free_memory", 1))

#: The built-in policies with their default parameters, by name.
BUILTIN_POLICIES: Mapping[str, Policy] = {
    policy.name: policy
    for policy in (
        Policy("none", weights=_EVEN_WEIGHTS, accepts=_CPU),
        Policy(
            "evenly_distributed",
            weights=_EVEN_WEIGHTS,
            balancer="evenly_distributed",
            accepts=_CPU | _MEMORY | {"VCpuToPhysicalCpuRatio"},
        ),
        Policy(
            "power_saving",
            weights=(("pack_cpu", 2), ("pack_memory", 1)),
            balancer="power_saving",
            parameters=PolicyParameters(low_utilization=20),
            accepts=_CPU
            | _MEMORY
            | {"LowUtilization", "HostsInReserve", "EnableAutomaticHostPowerManagement"},
        ),
        Policy(
            "vm_evenly_distributed",
            weights=(("vm_count", 2),),
            balancer="vm_evenly_distributed",
            accepts=_CPU | {"HighVmCount", "MigrationThreshold", "SpmVmGrace"},
        ),
    )
}

#: The policy a cluster gets when it names none (as in oVirt).
DEFAULT_POLICY = "none"


def make_policy(
    name: str = DEFAULT_POLICY,
    parameters: Mapping[str, object] | None = None,
    *,
    memory_over_commit_percent: int = DEFAULT_MEMORY_OVER_COMMIT,
) -> Policy:
    """
    A built-in policy with the cluster's parameters.

    :param name: ``none``, ``evenly_distributed``, ``power_saving`` or ``vm_evenly_distributed``.
    :param parameters: oVirt parameter names to values; unset ones keep the policy's defaults.
    :param memory_over_commit_percent: the cluster's memory overcommit, ≥ 1 (100 = none).
    :raises PolicyError: for an unknown policy or a bad parameter.
    """
    try:
        policy = BUILTIN_POLICIES[name]
    except KeyError:
        known = ", ".join(BUILTIN_POLICIES)
        raise PolicyError(f"unknown cluster policy {name!r} (known: {known})") from None
    ratio = memory_over_commit_percent
    if isinstance(ratio, bool) or not isinstance(ratio, int):
        raise PolicyError(f"memory overcommit must be an integer percent, not {ratio!r}")
    if ratio < 1:
        raise PolicyError(f"memory overcommit must be at least 1%, not {ratio}%")
    policy = replace(policy, memory_over_commit_percent=ratio)
    return policy.with_parameters(parameters or {})


def effective_filters(policy: Policy) -> tuple[str, ...]:
    """:returns: the filter names the scheduler runs: the mandatory ones, then the policy's."""
    return MANDATORY_FILTERS + tuple(f for f in policy.filters if f not in MANDATORY_FILTERS)


# -- CPU band tracking (what the monitor keeps per host) ------------------------------------


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
