"""Tests for engine.decide.filters: each filter's verdict and the numbers in its refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from engine.decide.filters import (
    CpuFilter,
    CpuOverloadedFilter,
    ExcludedFilter,
    HostFilter,
    MemoryFilter,
    PinningFilter,
    StatusFilter,
)
from engine.decide.model import HOST_UP, HostView, VmRequest
from engine.decide.policies import make_policy

POLICY = make_policy("none")


def make_host(**changes: Any) -> HostView:
    """:returns: an idle Up host with 4 CPUs and 8 GiB, changed by ``changes``."""
    return dataclasses.replace(HostView("h1", "host1", HOST_UP, 4, 8192, 8000), **changes)


def make_vm(**changes: Any) -> VmRequest:
    """:returns: a 1 GiB, 2-vCPU VM, changed by ``changes``."""
    return dataclasses.replace(VmRequest("v1", "vm1", 1024, 2), **changes)


@pytest.mark.parametrize(
    "cls",
    [StatusFilter, ExcludedFilter, PinningFilter, CpuFilter, MemoryFilter, CpuOverloadedFilter],
)
def test_every_filter_has_the_plugin_shape(cls: type) -> None:
    """Every built-in filter has a name and a ``refusal`` method (the HostFilter protocol)."""
    assert isinstance(cls(), HostFilter)
    assert cls().name


def test_status_passes_only_up_hosts() -> None:
    """The status filter passes an Up host and refuses any other status, naming it."""
    assert StatusFilter().refusal(make_vm(), make_host(), POLICY) is None
    for status in ("Maintenance", "NonResponsive", "Connecting", "Down", "PreparingForMaintenance"):
        reason = StatusFilter().refusal(make_vm(), make_host(status=status), POLICY)
        assert reason is not None and status in reason


def test_excluded_refuses_the_migration_source() -> None:
    """A VM being migrated may not go to the host it runs on."""
    reason = ExcludedFilter().refusal(make_vm(current_host="h1"), make_host(), POLICY)
    assert reason is not None and "runs on this host" in reason
    assert ExcludedFilter().refusal(make_vm(current_host="h2"), make_host(), POLICY) is None


def test_excluded_refuses_hosts_the_request_avoids() -> None:
    """A host listed in ``avoid_hosts`` is refused; others pass."""
    vm = make_vm(avoid_hosts=frozenset({"h1"}))
    assert "excluded" in (ExcludedFilter().refusal(vm, make_host(), POLICY) or "")
    assert ExcludedFilter().refusal(vm, make_host(id="h2"), POLICY) is None


def test_pinning_passes_only_the_pinned_host() -> None:
    """A pinned VM passes its host only; an unpinned VM passes every host."""
    vm = make_vm(pinned_host="h2")
    assert PinningFilter().refusal(vm, make_host(id="h2"), POLICY) is None
    assert "'h2'" in (PinningFilter().refusal(vm, make_host(), POLICY) or "")
    assert PinningFilter().refusal(make_vm(), make_host(), POLICY) is None


def test_cpu_refuses_more_vcpus_than_cpus() -> None:
    """A VM may have as many vCPUs as the host has CPUs, not one more."""
    assert CpuFilter().refusal(make_vm(vcpus=4), make_host(), POLICY) is None
    reason = CpuFilter().refusal(make_vm(vcpus=5), make_host(), POLICY)
    assert reason == "the VM has 5 vCPUs, the host only 4 CPUs"


def test_memory_fits_exactly() -> None:
    """A VM whose memory equals the schedulable memory fits."""
    host = make_host(memory_committed_mib=4096, memory_reserved_mib=1024, pending_memory_mib=2048)
    assert MemoryFilter().refusal(make_vm(memory_mib=1024), host, POLICY) is None


def test_memory_refusal_shows_the_whole_sum() -> None:
    """A refusal shows the need, what is left, and every term of the sum."""
    host = make_host(memory_committed_mib=4096, memory_reserved_mib=1024, pending_memory_mib=2048)
    reason = MemoryFilter().refusal(make_vm(memory_mib=1025), host, POLICY)
    assert reason == (
        "the VM needs 1025 MiB, the host can promise 1024 MiB (8192 MiB × 100% overcommit = "
        "8192 MiB − 4096 committed − 1024 reserved − 2048 pending)"
    )


def test_memory_overcommit_ratio_lets_more_in() -> None:
    """With 150 % overcommit a host of 8 GiB with 8 GiB committed still takes a 4 GiB VM."""
    host = make_host(memory_committed_mib=8192)
    vm = make_vm(memory_mib=4096)
    assert MemoryFilter().refusal(vm, host, POLICY) is not None
    generous = make_policy("none", memory_over_commit_percent=150)
    assert MemoryFilter().refusal(vm, host, generous) is None
    assert MemoryFilter().refusal(make_vm(memory_mib=4097), host, generous) is not None


def test_memory_overcommit_below_100_holds_memory_back() -> None:
    """An overcommit under 100 % keeps part of the physical memory unpromised."""
    half = make_policy("none", memory_over_commit_percent=50)
    assert MemoryFilter().refusal(make_vm(memory_mib=4096), make_host(), half) is None
    reason = MemoryFilter().refusal(make_vm(memory_mib=4097), make_host(), half)
    assert reason is not None and "× 50% overcommit = 4096 MiB" in reason


def test_memory_refusal_never_shows_negative_room() -> None:
    """An overbooked host is said to be able to promise 0 MiB, not a negative amount."""
    reason = MemoryFilter().refusal(make_vm(), make_host(memory_committed_mib=9000), POLICY)
    assert reason is not None and "can promise 0 MiB" in reason


def loaded(load: float, seconds: float) -> HostView:
    """:returns: a host with ``load`` % CPU, outside the band for ``seconds``."""
    return make_host(cpu_load_percent=load, cpu_over_commit_seconds=seconds)


def test_cpu_overloaded_needs_load_and_duration() -> None:
    """A host is overloaded only above HighUtilization for at least the duration."""
    f, vm = CpuOverloadedFilter(), make_vm()
    assert f.refusal(vm, loaded(95, 119), POLICY) is None
    assert f.refusal(vm, loaded(80, 999), POLICY) is None
    reason = f.refusal(vm, loaded(95, 120), POLICY)
    assert reason == "CPU load 95.0% > HighUtilization 80% for 120 s (limit 120 s)"


def test_cpu_overloaded_follows_the_policy_parameters() -> None:
    """HighUtilization and CpuOverCommitDurationMinutes come from the policy."""
    policy = make_policy("none", {"HighUtilization": 90, "CpuOverCommitDurationMinutes": 5})
    f, vm = CpuOverloadedFilter(), make_vm()
    assert f.refusal(vm, loaded(89, 900), policy) is None
    assert f.refusal(vm, loaded(95, 299), policy) is None
    assert f.refusal(vm, loaded(95, 300), policy)
