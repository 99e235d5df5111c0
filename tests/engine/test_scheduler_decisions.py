"""Tests for engine.decide.scheduler.schedule: choices, ordering per policy, explanations."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from engine.decide.filters import CpuFilter, StatusFilter
from engine.decide.model import HOST_UP, HostView, VmRequest
from engine.decide.plugins import PolicyUnits
from engine.decide.policies import make_policy
from engine.decide.scheduler import PendingResources, schedule
from engine.decide.weights import VmCountWeight

NONE = make_policy("none")


def make_host(id: str, **changes: Any) -> HostView:
    """:returns: an idle Up host ``host-<id>`` with 4 CPUs and 8 GiB, changed by ``changes``."""
    base = HostView(id, f"host-{id}", HOST_UP, 4, 8192, 8192)
    return dataclasses.replace(base, **changes)


def make_vm(**changes: Any) -> VmRequest:
    """:returns: a 1 GiB, 2-vCPU VM ``web``, changed by ``changes``."""
    return dataclasses.replace(VmRequest("v1", "web", 1024, 2), **changes)


def test_none_prefers_low_cpu_load() -> None:
    """Under ``none`` the host with the lowest load wins when memory is equal."""
    hosts = [make_host("a", cpu_load_percent=50), make_host("b", cpu_load_percent=5)]
    assert schedule(make_vm(), hosts, NONE).host == "b"


def test_none_weighs_cpu_twice_as_much_as_memory() -> None:
    """Lower load (factor 2) beats more free memory (factor 1) under ``none``."""
    hosts = [
        make_host("cool", cpu_load_percent=5, memory_committed_mib=4096),
        make_host("roomy", cpu_load_percent=50),
    ]
    decision = schedule(make_vm(), hosts, NONE)
    assert decision.host == "cool"
    assert decision.scores == {"cool": 2, "roomy": 1}


def test_rank_scores_follow_ovirts_rank_selector() -> None:
    """Rank is the number of other hosts a host is at least as good as; score Σ factor × rank."""
    hosts = [
        make_host("a", cpu_load_percent=10, memory_committed_mib=1024),
        make_host("b", cpu_load_percent=20, memory_committed_mib=0),
        make_host("c", cpu_load_percent=20, memory_committed_mib=2048),
    ]
    decision = schedule(make_vm(), hosts, NONE)
    # cpu_load ranks: a 2, b and c tie at 1 -> ×2; free_memory ranks: b 2, a 1, c 0 -> ×1
    assert decision.scores == {"a": 5, "b": 4, "c": 2}
    assert decision.ranking == ("a", "b", "c")
    assert decision.alternates == ("b", "c")


def test_evenly_distributed_spreads_like_none() -> None:
    """``evenly_distributed`` places like ``none``: the least loaded, roomiest host."""
    hosts = [make_host("a", cpu_load_percent=60), make_host("b", cpu_load_percent=20)]
    assert schedule(make_vm(), hosts, make_policy("evenly_distributed")).host == "b"


def test_power_saving_packs_onto_the_busiest_host_that_fits() -> None:
    """``power_saving`` prefers the fuller, busier host while it stays within HighUtilization."""
    hosts = [
        make_host("idle", cpu_load_percent=2),
        make_host("busy", cpu_load_percent=60, memory_committed_mib=6144),
        make_host("hot", cpu_load_percent=79, memory_committed_mib=6144),
    ]
    decision = schedule(make_vm(), hosts, make_policy("power_saving"))
    assert decision.host == "busy"
    assert decision.scores == {"busy": 6, "hot": 2, "idle": 2}
    assert "predicted load 84.0%" in decision.explanations["hot"][1]
    assert "> HighUtilization 80%" in decision.explanations["hot"][1]


def test_vm_evenly_distributed_prefers_fewer_vms() -> None:
    """``vm_evenly_distributed`` prefers the host with the fewest VMs, whatever its load."""
    hosts = [
        make_host("many", vm_count=9, cpu_load_percent=1),
        make_host("few", vm_count=2, cpu_load_percent=70),
    ]
    assert schedule(make_vm(), hosts, make_policy("vm_evenly_distributed")).host == "few"


def test_ties_break_on_host_name_then_id() -> None:
    """Equal hosts are ordered by name, then by id, whatever the snapshot order."""
    hosts = [
        make_host("3", name="beta"),
        make_host("2", name="alpha"),
        make_host("1", name="alpha"),
    ]
    for order in (hosts, hosts[::-1]):
        decision = schedule(make_vm(), order, NONE)
        assert decision.ranking == ("1", "2", "3")


def test_snapshot_order_never_changes_the_decision() -> None:
    """Shuffling the hosts gives the same decision and explanations."""
    rng = random.Random(7)
    hosts = [
        make_host(str(i), cpu_load_percent=rng.choice([10, 20, 30]), vm_count=rng.randrange(5))
        for i in range(30)
    ]
    first = schedule(make_vm(), hosts, NONE)
    for _ in range(5):
        rng.shuffle(hosts)
        again = schedule(make_vm(), hosts, NONE)
        assert (again.host, again.ranking, again.explanations) == (
            first.host,
            first.ranking,
            first.explanations,
        )


def test_a_refused_start_explains_every_host_with_numbers() -> None:
    """When no host fits, every host's explanation names each filter that refused it and why."""
    hosts = [
        make_host("small", memory_total_mib=2048, memory_committed_mib=1536),
        make_host("few-cpus", cpus=1),
        make_host("away", status="Maintenance"),
        make_host("hot", cpu_load_percent=97, cpu_over_commit_seconds=600),
    ]
    decision = schedule(make_vm(vcpus=2), hosts, NONE)
    assert decision.host is None and decision.ranking == ()
    assert decision.explanations["small"] == [
        "refused by memory: the VM needs 1024 MiB, the host can promise 512 MiB "
        "(2048 MiB × 100% overcommit = 2048 MiB − 1536 committed − 0 reserved − 0 pending)"
    ]
    assert decision.explanations["few-cpus"] == [
        "refused by cpu: the VM has 2 vCPUs, the host only 1 CPUs"
    ]
    assert decision.explanations["away"] == [
        "refused by status: host status is Maintenance; only Up hosts run VMs"
    ]
    assert decision.explanations["hot"] == [
        "refused by cpu_overloaded: CPU load 97.0% > HighUtilization 80% for 600 s (limit 120 s)"
    ]


def test_a_host_refused_by_several_filters_lists_them_all() -> None:
    """Every refusing filter is listed, in filter order, not only the first."""
    host = make_host("bad", status="Down", cpus=1, memory_committed_mib=8192)
    reasons = schedule(make_vm(), [host], NONE).explanations["bad"]
    assert [r.split(":")[0] for r in reasons] == [
        "refused by status",
        "refused by cpu",
        "refused by memory",
    ]


def test_summary_of_a_refusal_has_a_line_per_host() -> None:
    """A refusal's summary says nothing fitted, then one line per host, by name."""
    hosts = [make_host("b", status="Down"), make_host("a", cpus=1)]
    summary = schedule(make_vm(), hosts, NONE).summary()
    lines = summary.splitlines()
    assert lines[0] == (
        "VM 'web' (1024 MiB, 2 vCPUs) cannot run under policy 'none': "
        "none of 2 hosts passed the filters"
    )
    assert lines[1].startswith("  host-a: refused by cpu: the VM has 2 vCPUs")
    assert lines[2].startswith("  host-b: refused by status: host status is Down")


def test_summary_of_a_placement_names_the_host_and_the_scores() -> None:
    """A placement's summary names the host, then the ranking, then the refused hosts."""
    hosts = [
        make_host("a", cpu_load_percent=40),
        make_host("b"),
        make_host("c", status="Maintenance"),
    ]
    lines = schedule(make_vm(), hosts, NONE).summary().splitlines()
    assert lines[0] == (
        "VM 'web' (1024 MiB, 2 vCPUs) → host 'host-b' under policy 'none': "
        "2 of 3 hosts passed the filters"
    )
    assert lines[1].startswith("  host-b: passed filters: status, excluded, pinning, cpu, memory")
    assert "cpu_load ×2: predicted load 5.0%" in lines[1] and lines[1].endswith("score 3: chosen")
    assert lines[2].startswith("  host-a:") and lines[2].endswith("score 1: 2nd choice")
    assert lines[3].startswith("  host-c: refused by status")


def test_no_hosts_at_all() -> None:
    """With an empty snapshot there is no host, and the summary says there are none."""
    decision = schedule(make_vm(), [], NONE)
    assert decision.host is None and decision.explanations == {}
    assert decision.summary().endswith("there are no hosts")


def test_single_passing_host_is_chosen() -> None:
    """When only one host passes it is chosen with score 0."""
    decision = schedule(make_vm(), [make_host("only"), make_host("x", status="Down")], NONE)
    assert decision.host == "only" and decision.host_name == "host-only"
    assert decision.explanations["only"][-1] == "score 0: chosen"


def test_pinned_vm_goes_to_its_host_even_when_worse() -> None:
    """A pinned VM runs on its host although another would score better."""
    hosts = [make_host("good"), make_host("pin", cpu_load_percent=70)]
    decision = schedule(make_vm(pinned_host="pin"), hosts, NONE)
    assert decision.host == "pin"
    assert decision.explanations["good"] == ["refused by pinning: the VM is pinned to host 'pin'"]


def test_pinned_to_a_missing_host_is_said_in_the_summary() -> None:
    """A VM pinned to a host absent from the snapshot is refused, and the summary says so."""
    decision = schedule(make_vm(pinned_host="gone"), [make_host("a")], NONE)
    assert decision.host is None
    assert "  the pinned host 'gone' is not among them" in decision.summary().splitlines()


def test_pinned_host_that_cannot_fit_refuses_the_start() -> None:
    """Pinning does not override other filters: a full pinned host means no start."""
    hosts = [make_host("a"), make_host("pin", memory_committed_mib=8192)]
    decision = schedule(make_vm(pinned_host="pin"), hosts, NONE)
    assert decision.host is None
    assert decision.explanations["pin"][0].startswith("refused by memory")


def test_migration_never_chooses_the_current_host() -> None:
    """A migrating VM goes elsewhere even when its current host is the best."""
    hosts = [make_host("src"), make_host("dst", cpu_load_percent=50)]
    decision = schedule(make_vm(current_host="src"), hosts, NONE)
    assert decision.host == "dst"
    assert "runs on this host" in decision.explanations["src"][0]


def test_avoided_hosts_are_skipped() -> None:
    """A rerun avoids the hosts where earlier attempts failed."""
    hosts = [make_host("a"), make_host("b", cpu_load_percent=30)]
    assert schedule(make_vm(avoid_hosts=frozenset({"a"})), hosts, NONE).host == "b"


def test_duplicate_host_ids_are_refused() -> None:
    """A snapshot with two hosts of one id is a ValueError."""
    with pytest.raises(ValueError, match="appears twice"):
        schedule(make_vm(), [make_host("a"), make_host("a", name="other")], NONE)


def test_units_can_be_given_directly() -> None:
    """Explicit units replace the policy's plugins (for tests and the simulator)."""
    units = PolicyUnits(filters=(StatusFilter(), CpuFilter()), weights=((VmCountWeight(), 1),))
    hosts = [make_host("a", vm_count=3), make_host("b", vm_count=1, memory_committed_mib=8192)]
    decision = schedule(make_vm(), hosts, NONE, units=units)
    assert decision.host == "b"  # no memory filter among the units
    assert decision.explanations["b"][0] == "passed filters: status, cpu"


def test_schedule_reads_the_ledger_without_changing_it() -> None:
    """``schedule`` counts pending reservations but never adds one."""
    pending = PendingResources()
    pending.reserve(make_vm(id="other", memory_mib=8192), "a")
    decision = schedule(make_vm(), [make_host("a"), make_host("b")], NONE, pending)
    assert decision.host == "b"
    assert len(pending) == 1 and "v1" not in pending


def test_five_hundred_hosts_get_one_decision_with_an_explanation_each() -> None:
    """A decision across 500 mixed hosts picks an Up host and explains every host (speed is
    measured in bench/, not here)."""
    rng = random.Random(1)
    hosts = [
        make_host(
            f"{i:03}",
            cpus=rng.choice([8, 16, 32]),
            memory_total_mib=rng.choice([32768, 65536]),
            memory_committed_mib=rng.randrange(0, 32768),
            cpu_load_percent=rng.uniform(0, 100),
            cpu_over_commit_seconds=rng.choice([0, 600]),
            vm_count=rng.randrange(40),
            status=rng.choice([HOST_UP] * 9 + ["Maintenance"]),
        )
        for i in range(500)
    ]
    schedule(make_vm(), hosts, NONE)  # load the plugins once
    decision = schedule(make_vm(memory_mib=4096, vcpus=4), hosts, NONE)
    assert decision.host is not None and len(decision.explanations) == 500
    chosen = next(h for h in hosts if h.id == decision.host)
    assert chosen.status == HOST_UP
