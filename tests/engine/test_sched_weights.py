"""Tests for engine.decide.weights: which host each weight prefers (lower is better)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from engine.decide.model import HOST_UP, HostView, VmRequest
from engine.decide.policies import make_policy
from engine.decide.weights import (
    CpuLoadWeight,
    FreeMemoryWeight,
    HostWeight,
    PackCpuWeight,
    PackMemoryWeight,
    VmCountWeight,
    predicted_load,
)

POLICY = make_policy("none")
VM = VmRequest("v1", "vm1", 1024, 2)


def make_host(**changes: Any) -> HostView:
    """:returns: an idle Up host with 4 CPUs and 8 GiB, changed by ``changes``."""
    return dataclasses.replace(HostView("h1", "host1", HOST_UP, 4, 8192, 8000), **changes)


@pytest.mark.parametrize(
    "cls", [FreeMemoryWeight, PackMemoryWeight, CpuLoadWeight, PackCpuWeight, VmCountWeight]
)
def test_every_weight_has_the_plugin_shape(cls: type) -> None:
    """Every built-in weight has a name and a ``weigh`` method (the HostWeight protocol)."""
    assert isinstance(cls(), HostWeight)
    assert cls().name


def test_predicted_load_adds_new_and_pending_vcpus() -> None:
    """Predicted load is load + (VM and pending vCPUs) × 10 % / CPUs."""
    assert predicted_load(VM, make_host(cpu_load_percent=30), POLICY) == 35.0
    assert predicted_load(VM, make_host(cpu_load_percent=30, pending_vcpus=2), POLICY) == 40.0


def test_predicted_load_survives_a_host_without_cpus() -> None:
    """A host reporting no CPUs is treated as one CPU, not a division by zero."""
    assert predicted_load(VM, make_host(cpus=0), POLICY) == 20.0


def test_free_memory_prefers_more_memory_left() -> None:
    """The free-memory weight ranks the host with more memory left after the VM better."""
    roomy = FreeMemoryWeight().weigh(VM, make_host(), POLICY)
    tight = FreeMemoryWeight().weigh(VM, make_host(memory_committed_mib=4096), POLICY)
    assert roomy.value < tight.value
    assert tight.detail == "4096 MiB schedulable, 3072 MiB left after the VM"


def test_free_memory_counts_pending_memory() -> None:
    """Memory promised to starting VMs counts as used."""
    pending = FreeMemoryWeight().weigh(VM, make_host(pending_memory_mib=4096), POLICY)
    assert pending.value == -3072


def test_pack_memory_prefers_less_memory_left() -> None:
    """The packing memory weight ranks the fuller host better."""
    roomy = PackMemoryWeight().weigh(VM, make_host(), POLICY)
    tight = PackMemoryWeight().weigh(VM, make_host(memory_committed_mib=4096), POLICY)
    assert tight.value < roomy.value


def test_cpu_load_prefers_lower_predicted_load() -> None:
    """The CPU-load weight is the predicted load, explained with its terms."""
    idle = CpuLoadWeight().weigh(VM, make_host(cpu_load_percent=10), POLICY)
    busy = CpuLoadWeight().weigh(VM, make_host(cpu_load_percent=50), POLICY)
    assert idle.value < busy.value
    assert idle.detail == "predicted load 15.0% (10.0% now + 2 vCPUs × 10% / 4 CPUs)"


def test_cpu_load_mentions_pending_vcpus() -> None:
    """The explanation separates the VM's vCPUs from those pending on the host."""
    w = CpuLoadWeight().weigh(VM, make_host(pending_vcpus=4), POLICY)
    assert "(2 + 4 pending) vCPUs" in w.detail and w.value == 15.0


def test_cpu_load_spreads_between_equal_hosts_with_pending() -> None:
    """Of two equal hosts, the one with VMs still starting weighs worse."""
    empty = CpuLoadWeight().weigh(VM, make_host(), POLICY)
    starting = CpuLoadWeight().weigh(VM, make_host(pending_vcpus=2), POLICY)
    assert empty.value < starting.value


def test_pack_cpu_prefers_the_fullest_host_within_high_utilization() -> None:
    """Packing prefers more load as long as the prediction stays within HighUtilization."""
    policy = make_policy("power_saving")
    w = PackCpuWeight()
    light = w.weigh(VM, make_host(cpu_load_percent=10), policy)
    heavy = w.weigh(VM, make_host(cpu_load_percent=70), policy)
    at_limit = w.weigh(VM, make_host(cpu_load_percent=75), policy)
    over = w.weigh(VM, make_host(cpu_load_percent=76), policy)
    much_over = w.weigh(VM, make_host(cpu_load_percent=90), policy)
    assert at_limit.value < heavy.value < light.value < over.value < much_over.value
    assert "≤ HighUtilization 80%" in at_limit.detail
    assert "> HighUtilization 80%" in over.detail


def test_vm_count_counts_running_and_starting_vms() -> None:
    """The VM-count weight is running plus starting VMs."""
    w = VmCountWeight().weigh(VM, make_host(vm_count=3, pending_vms=2), POLICY)
    assert w.value == 5 and w.detail == "3 VMs running, 2 starting"
    assert VmCountWeight().weigh(VM, make_host(vm_count=1), POLICY).value < w.value
