"""Tests for the pending-resource ledger and placing VMs that start at the same time."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from engine.decide.model import HOST_UP, HostPending, HostView, VmRequest
from engine.decide.policies import make_policy
from engine.decide.scheduler import PendingResources, Reservation, place, place_all, start_order

NONE = make_policy("none")


def make_host(id: str, **changes: Any) -> HostView:
    """:returns: an idle Up host ``host-<id>`` with 4 CPUs and 8 GiB, changed by ``changes``."""
    return dataclasses.replace(HostView(id, f"host-{id}", HOST_UP, 4, 8192, 8192), **changes)


def make_vm(n: int, **changes: Any) -> VmRequest:
    """:returns: VM number ``n``: 1 GiB, 1 vCPU, changed by ``changes``."""
    return dataclasses.replace(VmRequest(f"v{n:02}", f"vm{n:02}", 1024, 1), **changes)


# -- the ledger -----------------------------------------------------------------------------


def test_reserve_adds_to_the_host_totals() -> None:
    """Each reservation adds its memory, vCPUs and one VM to its host's totals."""
    ledger = PendingResources()
    first = ledger.reserve(make_vm(1), "a")
    ledger.reserve(make_vm(2, memory_mib=2048, vcpus=2), "a")
    ledger.reserve(make_vm(3), "b")
    assert first == Reservation("v01", "a", HostPending(1024, 1, 1))
    assert ledger.for_host("a") == HostPending(3072, 3, 2)
    assert ledger.for_host("b") == HostPending(1024, 1, 1)
    assert ledger.for_host("c") == HostPending()
    assert len(ledger) == 3 and "v02" in ledger
    assert [r.vm_id for r in ledger] == ["v01", "v02", "v03"]


def test_release_returns_the_reservation_once() -> None:
    """Releasing frees the VM's share and is idempotent."""
    ledger = PendingResources()
    ledger.reserve(make_vm(1), "a")
    ledger.reserve(make_vm(2), "a")
    assert ledger.release("v01") == Reservation("v01", "a", HostPending(1024, 1, 1))
    assert ledger.release("v01") is None
    assert ledger.for_host("a") == HostPending(1024, 1, 1)
    ledger.release("v02")
    assert ledger.for_host("a") == HostPending() and len(ledger) == 0


def test_reserving_again_moves_the_reservation() -> None:
    """A VM holds one reservation at most: reserving it elsewhere moves it."""
    ledger = PendingResources()
    ledger.reserve(make_vm(1), "a")
    ledger.reserve(make_vm(1), "b")
    assert ledger.for_host("a") == HostPending()
    assert ledger.reservation("v01") == Reservation("v01", "b", HostPending(1024, 1, 1))


def test_release_host_drops_every_reservation_there() -> None:
    """When a host goes away its reservations are dropped and returned; others stay."""
    ledger = PendingResources()
    for n, host in ((1, "a"), (2, "b"), (3, "a")):
        ledger.reserve(make_vm(n), host)
    assert [r.vm_id for r in ledger.release_host("a")] == ["v01", "v03"]
    assert ledger.for_host("a") == HostPending() and list(ledger)[0].vm_id == "v02"


# -- concurrent starts ----------------------------------------------------------------------


def test_concurrent_starts_never_overbook_one_small_host() -> None:
    """Ten 1 GiB VMs started at once against a 4 GiB host: four fit, six are refused, and the
    refusals count the pending memory."""
    host = make_host("small", memory_total_mib=4096)
    ledger = PendingResources()
    decisions = [place(make_vm(n), [host], NONE, ledger) for n in range(10)]
    assert [d.host for d in decisions] == ["small"] * 4 + [None] * 6
    assert ledger.for_host("small") == HostPending(4096, 4, 4)
    assert decisions[4].explanations["small"] == [
        "refused by memory: the VM needs 1024 MiB, the host can promise 0 MiB "
        "(4096 MiB × 100% overcommit = 4096 MiB − 0 committed − 0 reserved − 4096 pending)"
    ]


def test_concurrent_starts_honour_the_overcommit_ratio() -> None:
    """With 150 % overcommit the same 4 GiB host takes six 1 GiB VMs, and no more."""
    host = make_host("small", memory_total_mib=4096)
    ledger = PendingResources()
    policy = make_policy("none", memory_over_commit_percent=150)
    placed = [place(make_vm(n), [host], policy, ledger).host for n in range(10)]
    assert placed.count("small") == 6


def test_a_failed_start_frees_its_room() -> None:
    """Releasing a failed start's reservation lets the next VM use the room."""
    host = make_host("small", memory_total_mib=2048)
    ledger = PendingResources()
    assert place(make_vm(1), [host], NONE, ledger).host == "small"
    assert place(make_vm(2), [host], NONE, ledger).host == "small"
    assert place(make_vm(3), [host], NONE, ledger).host is None
    ledger.release("v01")  # the start failed
    assert place(make_vm(3), [host], NONE, ledger).host == "small"


def test_a_vm_that_came_up_moves_from_pending_to_committed() -> None:
    """Once the snapshot counts a VM as committed and its reservation is released, the host is
    exactly as full as before."""
    host = make_host("small", memory_total_mib=2048)
    ledger = PendingResources()
    place(make_vm(1), [host], NONE, ledger)
    place(make_vm(2), [host], NONE, ledger)
    up = dataclasses.replace(host, memory_committed_mib=1024, vm_count=1)
    ledger.release("v01")  # Up, and counted in ``up``
    assert place(make_vm(3), [up], NONE, ledger).host is None
    ledger.release("v02")
    both_up = dataclasses.replace(up, memory_committed_mib=2048, vm_count=2)
    assert place(make_vm(3), [both_up], NONE, ledger).host is None


def test_snapshot_pending_and_ledger_pending_both_count() -> None:
    """Memory the snapshot already lists as pending adds to the ledger's."""
    host = make_host("small", memory_total_mib=3072, pending_memory_mib=1024)
    ledger = PendingResources()
    placed = [place(make_vm(n), [host], NONE, ledger).host for n in range(4)]
    assert placed == ["small", "small", None, None]


def test_a_vm_rescheduled_does_not_count_against_itself() -> None:
    """A VM that already holds a reservation on a host may be scheduled there again."""
    host = make_host("small", memory_total_mib=1024)
    ledger = PendingResources()
    assert place(make_vm(1), [host], NONE, ledger).host == "small"
    assert place(make_vm(1), [host], NONE, ledger).host == "small"
    assert ledger.for_host("small") == HostPending(1024, 1, 1)
    assert place(make_vm(2), [host], NONE, ledger).host is None


def test_concurrent_starts_spread_over_equal_hosts() -> None:
    """Eight VMs started at once over four equal hosts land two on each."""
    hosts = [make_host(name) for name in "abcd"]
    ledger = PendingResources()
    placed = Counter(place(make_vm(n), hosts, NONE, ledger).host for n in range(8))
    assert placed == {"a": 2, "b": 2, "c": 2, "d": 2}


def test_power_saving_packs_concurrent_starts() -> None:
    """Under power saving, concurrent starts fill one host before the next."""
    hosts = [make_host(name, memory_total_mib=3072) for name in "ab"]
    ledger = PendingResources()
    policy = make_policy("power_saving")
    placed = [place(make_vm(n), hosts, policy, ledger).host for n in range(6)]
    assert placed == ["a", "a", "a", "b", "b", "b"]


def test_many_concurrent_starts_fill_a_cluster_exactly() -> None:
    """A hundred small VMs over three hosts of different sizes use every MiB and no more."""
    hosts = [
        make_host("a", memory_total_mib=4096),
        make_host("b", memory_total_mib=8192, memory_committed_mib=2048),
        make_host("c", memory_total_mib=2048, memory_reserved_mib=512),
    ]
    ledger = PendingResources()
    decisions = [place(make_vm(n, memory_mib=512), hosts, NONE, ledger) for n in range(100)]
    placed = Counter(d.host for d in decisions)
    assert placed == {"a": 8, "b": 12, "c": 3, None: 77}
    for h in hosts:
        used = h.memory_committed_mib + h.memory_reserved_mib + ledger.for_host(h.id).memory_mib
        assert used <= h.memory_total_mib


def test_start_order_is_priority_then_name() -> None:
    """VMs start by descending HA priority, then by name."""
    vms = [
        make_vm(1, name="b", ha_priority=50),
        make_vm(2, name="a", ha_priority=50),
        make_vm(3, name="z", ha_priority=100),
        make_vm(4, name="c"),
    ]
    assert [vm.name for vm in start_order(vms)] == ["z", "a", "b", "c"]


def test_place_all_gives_room_to_high_priority_vms_first() -> None:
    """With room for two, the two highest-priority VMs are placed and the others refused."""
    host = make_host("small", memory_total_mib=2048)
    vms = [make_vm(1, ha_priority=1), make_vm(2, ha_priority=90), make_vm(3, ha_priority=50)]
    decisions = place_all(vms, [host], NONE, PendingResources())
    assert [(d.vm.id, d.host) for d in decisions] == [
        ("v02", "small"),
        ("v03", "small"),
        ("v01", None),
    ]
