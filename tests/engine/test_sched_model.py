"""Tests for engine.decide.model: the scheduler's snapshot and its memory arithmetic."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from engine.decide.model import (
    HOST_UP,
    NO_PENDING,
    HostPending,
    HostView,
    VmRequest,
    memory_capacity_mib,
    schedulable_memory_mib,
    with_pending,
)


def make_host(**changes: Any) -> HostView:
    """:returns: an Up host with 4 CPUs and 8 GiB, changed by ``changes``."""
    base = HostView("h1", "host1", HOST_UP, 4, 8192, 8000)
    return dataclasses.replace(base, **changes)


def test_snapshot_objects_are_frozen() -> None:
    """A host view and a VM request cannot be changed after they are built."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_host().cpus = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        VmRequest("v1", "vm1", 1024, 1).memory_mib = 2  # type: ignore[misc]


def test_capacity_applies_the_overcommit_percent() -> None:
    """Capacity is physical memory × overcommit / 100, rounded down."""
    host = make_host(memory_total_mib=1001)
    assert memory_capacity_mib(host, 100) == 1001
    assert memory_capacity_mib(host, 150) == 1501
    assert memory_capacity_mib(host, 50) == 500


def test_schedulable_memory_subtracts_committed_reserved_and_pending() -> None:
    """Schedulable memory is capacity minus committed, reserved and pending memory."""
    host = make_host(memory_committed_mib=2048, memory_reserved_mib=256, pending_memory_mib=1024)
    assert schedulable_memory_mib(host, 100) == 8192 - 2048 - 256 - 1024
    assert schedulable_memory_mib(host, 200) == 16384 - 2048 - 256 - 1024


def test_schedulable_memory_may_be_negative_when_overbooked() -> None:
    """A host whose promises exceed its capacity reports negative schedulable memory."""
    assert schedulable_memory_mib(make_host(memory_committed_mib=9000), 100) == -808


def test_host_pending_arithmetic() -> None:
    """Pending amounts add and subtract field by field; only the zero amount is false."""
    a, b = HostPending(1024, 2, 1), HostPending(512, 1, 1)
    assert a + b == HostPending(1536, 3, 2)
    assert (a + b) - b == a
    assert not NO_PENDING and a


def test_with_pending_adds_to_the_host_pending_figures() -> None:
    """``with_pending`` adds the ledger's amount to what the snapshot already had pending."""
    host = make_host(pending_memory_mib=100, pending_vcpus=1, pending_vms=1, vm_count=3)
    view = with_pending(host, HostPending(1024, 2, 1))
    assert (view.pending_memory_mib, view.pending_vcpus, view.pending_vms) == (1124, 3, 2)
    assert dataclasses.replace(view, pending_memory_mib=100, pending_vcpus=1, pending_vms=1) == host


def test_with_pending_nothing_returns_the_same_host() -> None:
    """Adding nothing pending returns the very same host object."""
    host = make_host()
    assert with_pending(host, NO_PENDING) is host
