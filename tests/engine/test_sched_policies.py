"""Tests for engine.decide.policies: built-in policies, parameters, CPU bands, classification."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from engine.decide.model import HOST_UP, HostView
from engine.decide.policies import (
    BUILTIN_POLICIES,
    DEFAULT_POLICY,
    MANDATORY_FILTERS,
    PARAMETERS,
    Policy,
    PolicyError,
    PolicyParameters,
    effective_filters,
    make_policy,
)
from engine.decide.utilization import (
    CpuBand,
    classify,
    cpu_band,
    cpu_band_since,
    cpu_over_commit_seconds,
)

HOT = 300.0  # seconds outside the band: longer than the default 2 minutes


def make_host(id: str, **changes: Any) -> HostView:
    """:returns: an Up host named ``host-<id>`` with 4 CPUs and 8 GiB, changed by ``changes``."""
    base = HostView(id, f"host-{id}", HOST_UP, 4, 8192, 8000, vm_count=2)
    return dataclasses.replace(base, **changes)


# -- built-in policies and parameters -------------------------------------------------------


def test_builtin_policies_are_ovirts() -> None:
    """The built-in policies are none, evenly_distributed, power_saving and
    vm_evenly_distributed, and none is the default."""
    assert set(BUILTIN_POLICIES) == {
        "none",
        "evenly_distributed",
        "power_saving",
        "vm_evenly_distributed",
    }
    assert DEFAULT_POLICY == "none" and make_policy().name == "none"


def test_policy_weights_and_factors_follow_ovirt() -> None:
    """Each policy weighs with oVirt's units and factors."""
    soft = (("vm_affinity", 10), ("host_affinity", 20))
    assert make_policy("none").weights == (("cpu_load", 2), ("free_memory", 1), *soft)
    assert make_policy("evenly_distributed").weights == (
        ("cpu_load", 2),
        ("free_memory", 1),
        *soft,
    )
    assert make_policy("power_saving").weights == (("pack_cpu", 2), ("pack_memory", 1), *soft)
    assert make_policy("vm_evenly_distributed").weights == (("vm_count", 2), *soft)


def test_policy_balancers() -> None:
    """Only ``none`` has no balancer; the others balance under their own name."""
    assert make_policy("none").balancer is None
    for name in ("evenly_distributed", "power_saving", "vm_evenly_distributed"):
        assert make_policy(name).balancer == name


def test_every_builtin_policy_runs_the_same_filters() -> None:
    """Every built-in policy filters by status, exclusion, pinning, hard affinity, CPU, memory
    and overload."""
    for policy in BUILTIN_POLICIES.values():
        assert policy.filters == (
            "status",
            "excluded",
            "pinning",
            "vm_affinity",
            "host_affinity",
            "cpu",
            "memory",
            "cpu_overloaded",
        )


def test_defaults_are_ovirts() -> None:
    """Defaults: HighUtilization 80, 2 minutes, LowUtilization 20 for power saving, HighVmCount
    10, MigrationThreshold 5, SpmVmGrace 5, no memory limits, overcommit 100 %."""
    none = make_policy("none").parameter_values()
    assert none == {"HighUtilization": 80, "CpuOverCommitDurationMinutes": 2}
    power = make_policy("power_saving").parameter_values()
    assert power["LowUtilization"] == 20 and power["HostsInReserve"] == 0
    assert power["EnableAutomaticHostPowerManagement"] is False
    assert power["MaxFreeMemoryForOverUtilized"] is None
    vm_even = make_policy("vm_evenly_distributed").parameter_values()
    assert (vm_even["HighVmCount"], vm_even["MigrationThreshold"], vm_even["SpmVmGrace"]) == (
        10,
        5,
        5,
    )
    assert make_policy("evenly_distributed").parameter_values()["VCpuToPhysicalCpuRatio"] == 0
    assert make_policy("none").memory_over_commit_percent == 100


def test_destination_threshold_is_64_with_the_defaults() -> None:
    """The evenly-distributed destination threshold is min(80 × 80 / 100, 80 − 10) = 64."""
    assert PolicyParameters().destination_threshold == 64
    assert PolicyParameters(high_utilization=95).destination_threshold == 76


def test_parameters_accept_ovirt_strings() -> None:
    """Parameters given as the strings oVirt stores are parsed into their types."""
    policy = make_policy(
        "power_saving",
        {
            "HighUtilization": "90",
            "LowUtilization": "10",
            "CpuOverCommitDurationMinutes": "5",
            "EnableAutomaticHostPowerManagement": "true",
            "MaxFreeMemoryForOverUtilized": "1024",
            "MinFreeMemoryForUnderUtilized": "4096",
        },
    )
    p = policy.parameters
    assert (p.high_utilization, p.low_utilization, p.cpu_over_commit_duration_minutes) == (
        90,
        10,
        5,
    )
    assert p.enable_automatic_host_power_management is True
    assert (p.max_free_memory_for_over_utilized, p.min_free_memory_for_under_utilized) == (
        1024,
        4096,
    )
    ratio = make_policy("evenly_distributed", {"VCpuToPhysicalCpuRatio": "1.5"})
    assert ratio.parameters.vcpu_to_physical_cpu_ratio == 1.5


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("HighUtilization", 49),
        ("HighUtilization", 100),
        ("LowUtilization", 50),
        ("LowUtilization", -1),
        ("CpuOverCommitDurationMinutes", 0),
        ("MaxFreeMemoryForOverUtilized", 0),
        ("MigrationThreshold", 1),
        ("HostsInReserve", -1),
        ("HighUtilization", "eighty"),
        ("HighUtilization", 80.5),
        ("HighUtilization", True),
        ("EnableAutomaticHostPowerManagement", "maybe"),
    ],
)
def test_parameters_out_of_range_are_refused(name: str, bad: object) -> None:
    """A parameter outside oVirt's range, or of the wrong type, is a PolicyError naming it."""
    policy = next(p for p in BUILTIN_POLICIES.values() if name in p.accepts)
    with pytest.raises(PolicyError, match=name):
        make_policy(policy.name, {name: bad})


def test_parameter_a_policy_does_not_take_is_refused() -> None:
    """Setting LowUtilization on ``none`` fails and lists what ``none`` takes."""
    with pytest.raises(PolicyError, match="does not take parameter 'LowUtilization'"):
        make_policy("none", {"LowUtilization": 10})


def test_memory_limits_must_not_cross() -> None:
    """MinFreeMemoryForUnderUtilized must be above MaxFreeMemoryForOverUtilized."""
    with pytest.raises(PolicyError, match="must be above"):
        make_policy(
            "evenly_distributed",
            {"MaxFreeMemoryForOverUtilized": 4096, "MinFreeMemoryForUnderUtilized": 4096},
        )


def test_unknown_policy_is_refused_with_the_known_ones() -> None:
    """An unknown policy name fails and lists the built-in policies."""
    with pytest.raises(PolicyError, match="unknown cluster policy 'fastest'.*power_saving"):
        make_policy("fastest")


@pytest.mark.parametrize("ratio", [0, -100, 1.5, "150", True])
def test_bad_memory_overcommit_is_refused(ratio: object) -> None:
    """The memory overcommit must be an integer percent of at least 1."""
    with pytest.raises(PolicyError, match="memory overcommit"):
        make_policy("none", memory_over_commit_percent=ratio)  # type: ignore[arg-type]


def test_with_parameters_keeps_the_original() -> None:
    """Changing parameters returns a new policy and leaves the original as it was."""
    base = make_policy("none")
    changed = base.with_parameters({"HighUtilization": 60})
    assert changed.parameters.high_utilization == 60
    assert base.parameters.high_utilization == 80


def test_every_parameter_maps_to_a_field() -> None:
    """Each oVirt parameter name maps onto a field of PolicyParameters."""
    names = {f.name for f in dataclasses.fields(PolicyParameters)}
    assert {spec.attribute for spec in PARAMETERS.values()} <= names


def test_effective_filters_put_mandatory_ones_first() -> None:
    """The mandatory filters run first, even when a policy leaves them out or reorders them."""
    custom = Policy("custom", filters=("memory", "pinning"))
    assert effective_filters(custom) == (*MANDATORY_FILTERS, "memory")


# -- CPU bands ------------------------------------------------------------------------------


def test_cpu_band_edges() -> None:
    """Load at HighUtilization is over, below LowUtilization is under, between is normal."""
    p = PolicyParameters(high_utilization=80, low_utilization=20)
    assert cpu_band(80, p) is CpuBand.OVER
    assert cpu_band(79.9, p) is CpuBand.NORMAL
    assert cpu_band(20, p) is CpuBand.NORMAL
    assert cpu_band(19.9, p) is CpuBand.UNDER
    assert cpu_band(0, PolicyParameters()) is CpuBand.NORMAL  # LowUtilization 0: never under


def test_cpu_band_since_keeps_the_start_while_on_one_side() -> None:
    """The since-time stays while the load stays over, and restarts when the side changes."""
    p = PolicyParameters(high_utilization=80, low_utilization=20)
    state = cpu_band_since(None, 50, p, now=0)
    assert state == (CpuBand.NORMAL, 0)
    state = cpu_band_since(state, 90, p, now=10)
    state = cpu_band_since(state, 95, p, now=20)
    assert state == (CpuBand.OVER, 10)
    assert cpu_over_commit_seconds(state, now=130) == 120
    state = cpu_band_since(state, 5, p, now=140)
    assert state == (CpuBand.UNDER, 140)
    state = cpu_band_since(state, 50, p, now=150)
    assert cpu_over_commit_seconds(state, now=500) == 0


# -- classification -------------------------------------------------------------------------


def test_none_classifies_nothing() -> None:
    """The ``none`` policy does not balance, so no host has a role."""
    result = classify(
        [make_host("a", cpu_load_percent=99, cpu_over_commit_seconds=HOT)], make_policy()
    )
    assert result.sources == () and result.over_utilized == ()
    assert result.explanations["a"] == ["policy 'none' does not balance"]


def test_evenly_over_utilized_needs_load_duration_and_a_vm() -> None:
    """A host is CPU-over-utilized at ≥ HighUtilization for the duration with at least one VM."""
    policy = make_policy("evenly_distributed")
    hosts = [
        make_host("hot", cpu_load_percent=90, cpu_over_commit_seconds=HOT),
        make_host("spike", cpu_load_percent=90, cpu_over_commit_seconds=60),
        make_host("empty", cpu_load_percent=90, cpu_over_commit_seconds=HOT, vm_count=0),
        make_host("hotter", cpu_load_percent=99, cpu_over_commit_seconds=HOT),
    ]
    result = classify(hosts, policy)
    assert result.over_utilized == ("hotter", "hot")
    assert result.sources == ("hotter", "hot")
    assert "load 90.0% ≥ HighUtilization 80% for 300 s" in result.explanations["hot"][0]


def test_evenly_destinations_are_below_the_threshold_least_loaded_first() -> None:
    """Evenly-distributed destinations are hosts under 64 % load, least loaded first."""
    policy = make_policy("evenly_distributed")
    hosts = [
        make_host("hot", cpu_load_percent=90, cpu_over_commit_seconds=HOT),
        make_host("b", cpu_load_percent=40),
        make_host("a", cpu_load_percent=40),
        make_host("cool", cpu_load_percent=10),
        make_host("warm", cpu_load_percent=64),
    ]
    assert classify(hosts, policy).destinations == ("cool", "a", "b")


def test_vcpu_ratio_makes_a_host_over_utilized() -> None:
    """With VCpuToPhysicalCpuRatio set, a host whose vCPUs reach the ratio is a source."""
    policy = make_policy("evenly_distributed", {"VCpuToPhysicalCpuRatio": 2})
    hosts = [
        make_host("dense", vcpus_committed=6, pending_vcpus=2),
        make_host("sparse", vcpus_committed=7),
    ]
    result = classify(hosts, policy)
    assert result.over_utilized == ("dense",)
    assert "8 vCPUs on 4 CPUs" in result.explanations["dense"][0]


def test_memory_classification_uses_schedulable_memory() -> None:
    """Memory over-utilized is schedulable < MaxFree with > 1 VM; under is schedulable > MinFree."""
    policy = make_policy(
        "evenly_distributed",
        {"MaxFreeMemoryForOverUtilized": 1024, "MinFreeMemoryForUnderUtilized": 4096},
    )
    hosts = [
        make_host("tight", memory_committed_mib=7680),
        make_host("tight-one-vm", memory_committed_mib=7680, vm_count=1),
        make_host("pending", memory_committed_mib=4096, pending_memory_mib=3584),
        make_host("roomy", memory_committed_mib=1024),
        make_host("middle", memory_committed_mib=5000),
    ]
    result = classify(hosts, policy)
    assert result.memory_over_utilized == ("pending", "tight")
    assert result.memory_under_utilized == ("roomy",)
    assert result.memory_sources == ("pending", "tight")
    assert result.memory_destinations == ("roomy",)
    reason = result.explanations["tight"][0]
    assert "512 MiB schedulable < MaxFreeMemoryForOverUtilized 1024 MiB" in reason


def test_memory_overcommit_changes_memory_classification() -> None:
    """With 200 % overcommit a host with 7.5 GiB committed is no longer memory-tight."""
    params = {"MaxFreeMemoryForOverUtilized": 1024}
    host = make_host("h", memory_committed_mib=7680)
    assert classify([host], make_policy("evenly_distributed", params)).memory_over_utilized
    generous = make_policy("evenly_distributed", params, memory_over_commit_percent=200)
    assert classify([host], generous).memory_over_utilized == ()


def test_power_saving_empties_idle_hosts_onto_the_fullest() -> None:
    """Power saving takes VMs from hot hosts, then from idle ones (fewest VMs first), and sends
    them to the most loaded hosts still within HighUtilization."""
    policy = make_policy("power_saving")
    hosts = [
        make_host("hot", cpu_load_percent=95, cpu_over_commit_seconds=HOT),
        make_host("idle2", cpu_load_percent=5, cpu_over_commit_seconds=HOT, vm_count=2),
        make_host("idle1", cpu_load_percent=8, cpu_over_commit_seconds=HOT, vm_count=1),
        make_host("empty", cpu_load_percent=1, cpu_over_commit_seconds=HOT, vm_count=0),
        make_host("just-idle", cpu_load_percent=5, cpu_over_commit_seconds=30),
        make_host("busy", cpu_load_percent=60),
        make_host("mid", cpu_load_percent=40),
    ]
    result = classify(hosts, policy)
    assert result.over_utilized == ("hot",)
    assert result.under_utilized == ("empty", "idle2", "idle1")
    assert result.sources == ("hot", "idle1", "idle2")
    assert result.destinations == ("busy", "mid", "just-idle")
    assert "LowUtilization 20%" in result.explanations["idle1"][0]


def test_power_saving_memory_roles_only_with_memory_limits() -> None:
    """Without memory limits power saving has no memory pass; with them it packs by memory."""
    hosts = [
        make_host("empty-ish", memory_committed_mib=512, vm_count=1),
        make_host("full", memory_committed_mib=7680),
        make_host("half", memory_committed_mib=4096),
        make_host("three-q", memory_committed_mib=6144),
    ]
    assert classify(hosts, make_policy("power_saving")).memory_destinations == ()
    policy = make_policy(
        "power_saving",
        {"MaxFreeMemoryForOverUtilized": 1024, "MinFreeMemoryForUnderUtilized": 6144},
    )
    result = classify(hosts, policy)
    assert result.memory_sources == ("full", "empty-ish")
    assert result.memory_destinations == ("three-q", "half")


def test_vm_evenly_sources_need_high_count_and_a_gap() -> None:
    """A VM-count source has ≥ HighVmCount VMs and MigrationThreshold more than the emptiest
    host; destinations have at most the fullest source's count minus the threshold."""
    policy = make_policy("vm_evenly_distributed")
    hosts = [
        make_host("crowded", vm_count=12),
        make_host("busy", vm_count=10, pending_vms=1),
        make_host("quiet", vm_count=6),
        make_host("empty", vm_count=0),
    ]
    result = classify(hosts, policy)
    assert result.sources == ("crowded", "busy")
    assert result.destinations == ("empty", "quiet")
    assert "12 VMs ≥ HighVmCount 10" in result.explanations["crowded"][0]


def test_vm_evenly_has_no_sources_without_a_gap() -> None:
    """Many VMs everywhere but no gap of MigrationThreshold means nothing to move."""
    hosts = [make_host("a", vm_count=12), make_host("b", vm_count=10)]
    result = classify(hosts, make_policy("vm_evenly_distributed"))
    assert result.sources == () and result.destinations == ()


def test_hosts_that_are_not_up_take_no_part() -> None:
    """A host in Maintenance is neither a source nor a destination, and says why."""
    policy = make_policy("evenly_distributed")
    hosts = [
        make_host("hot", cpu_load_percent=95, cpu_over_commit_seconds=HOT, status="Maintenance"),
        make_host("cool", cpu_load_percent=5, status="NonResponsive"),
    ]
    result = classify(hosts, policy)
    assert result.sources == () and result.destinations == ()
    assert result.explanations["hot"] == ["host status is Maintenance: not balanced"]


def test_unknown_balancer_is_an_error() -> None:
    """A custom policy naming a balancer that does not exist cannot be classified."""
    with pytest.raises(PolicyError, match="unknown balancer 'magic'"):
        classify([make_host("a")], Policy("custom", balancer="magic"))
