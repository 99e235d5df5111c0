"""Pure: cluster policies (filters, weights with factors, parameters).

A policy is oVirt's cluster policy (``InternalClusterPolicies.java``): which filters refuse hosts,
which weights rank the rest and with which integer factor, which balancer runs, and the parameters
those units read. The built-in ones, with oVirt's defaults:

============================ ============================= ===================== ===============
policy                       weights (factor)              balancer              parameters
============================ ============================= ===================== ===============
``none`` (the default)       cpu_load 2, free_memory 1     none                  High 80, 2 min
``evenly_distributed``       cpu_load 2, free_memory 1     evenly_distributed    + vCPU ratio,
                                                                                 memory limits,
                                                                                 spread 20
``power_saving``             pack_cpu 2, pack_memory 1     power_saving          + Low 20, reserve
``vm_evenly_distributed``    vm_count 2                    vm_evenly_distributed + VM counts
============================ ============================= ===================== ===============

Every built-in policy also weighs soft affinity: ``vm_affinity`` ×10 and ``host_affinity`` ×20
(these weights only count for VMs in soft groups). oVirt gives soft VM↔VM affinity a factor of 1,
which any load difference outvotes; 10 lets it win over small ones.

Every built-in policy filters with ``status``, ``excluded``, ``pinning``, ``vm_affinity``,
``host_affinity``, ``cpu``, ``memory`` and ``cpu_overloaded``; the first five are mandatory
(:data:`MANDATORY_FILTERS`): the scheduler runs them even when a policy leaves them out, as oVirt
runs its mandatory policy units. Hard affinity is mandatory (unlike oVirt, where a custom policy
may drop it) because the balancer, maintenance and HA honour hard groups whatever the policy, and
a user who made a rule hard expects no policy to waive it; the affinity filters cost nothing for a
VM outside groups.

``LoadSpreadThreshold`` is ours, not oVirt's: with it, ``evenly_distributed`` also relieves a host
whose CPU load is that many points above the cluster's mean, not only one above HighUtilization
for the duration (oVirt's clusters drift uneven below 80 %; 0 restores oVirt's behaviour).

Parameters are set with oVirt's names (``HighUtilization``, ``CpuOverCommitDurationMinutes``, ...)
and validated against oVirt's ranges; a policy refuses parameters it does not use. The cluster's
memory overcommit (oVirt's ``max_vds_memory_over_commit``, percent, default 100) travels with the
policy because every memory decision needs it.

What a policy says about each host's utilization (for the balancer) is in
:mod:`engine.decide.utilization`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: Filters the scheduler always runs first, whatever the policy lists.
MANDATORY_FILTERS: tuple[str, ...] = (
    "status",
    "excluded",
    "pinning",
    "vm_affinity",
    "host_affinity",
)

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
    :ivar load_spread_threshold: ``LoadSpreadThreshold`` (ours), CPU percentage points above the
        cluster's mean load at which the evenly-distributed balancer relieves a host (0–100; 0
        turns it off). The shell should feed loads averaged over the duration.
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
    load_spread_threshold: int = 0

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
    "LoadSpreadThreshold": _Spec("load_spread_threshold", _parse_int, 0, 100),
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
#: Soft affinity, in every built-in policy (see the module docstring for the factors).
AFFINITY_WEIGHTS: tuple[tuple[str, int], ...] = (("vm_affinity", 10), ("host_affinity", 20))
_EVEN_WEIGHTS = (("cpu_load", 2), ("free_memory", 1), *AFFINITY_WEIGHTS)

#: The built-in policies with their default parameters, by name.
BUILTIN_POLICIES: Mapping[str, Policy] = {
    policy.name: policy
    for policy in (
        Policy("none", weights=_EVEN_WEIGHTS, accepts=_CPU),
        Policy(
            "evenly_distributed",
            weights=_EVEN_WEIGHTS,
            balancer="evenly_distributed",
            parameters=PolicyParameters(load_spread_threshold=20),
            accepts=_CPU | _MEMORY | {"VCpuToPhysicalCpuRatio", "LoadSpreadThreshold"},
        ),
        Policy(
            "power_saving",
            weights=(("pack_cpu", 2), ("pack_memory", 1), *AFFINITY_WEIGHTS),
            balancer="power_saving",
            parameters=PolicyParameters(low_utilization=20),
            accepts=_CPU
            | _MEMORY
            | {"LowUtilization", "HostsInReserve", "EnableAutomaticHostPowerManagement"},
        ),
        Policy(
            "vm_evenly_distributed",
            weights=(("vm_count", 2), *AFFINITY_WEIGHTS),
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
