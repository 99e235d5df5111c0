"""Tests for engine.decide.balance: predictive multi-move plans, anti-thrash, affinity repair."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from balance_harness import Spec, check_plan, cluster, rerun, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.decide.affinity import AffinityGroup, violations
from engine.decide.balance import (
    BalanceLimits,
    MoveHistory,
    MoveRecord,
    VmPlacement,
    apply_moves,
    plan_moves,
)
from engine.decide.model import HostView
from engine.decide.policies import Policy, PolicyError, make_policy

EVEN = make_policy("evenly_distributed")
OVIRT_EVEN = make_policy("evenly_distributed", {"LoadSpreadThreshold": 0})
WIDE = BalanceLimits(max_in_per_host=10, max_out_per_host=10)


def hot_and_cool(n_hot: int = 4, share: float = 85.0, cool: float = 20.0):
    """:returns: host ``hot`` with ``n_hot`` VMs totalling ``share`` % and two cool hosts."""
    return cluster(
        {
            "hot": [spec(f"h{i}", share / n_hot * 4) for i in range(n_hot)],
            "c1": [spec("c1", cool)],
            "c2": [spec("c2", cool)],
        }
    )


# -- evenly_distributed ---------------------------------------------------------------------


def test_relieves_a_hot_host_with_predicted_loads() -> None:
    """A host over HighUtilization for the duration gives VMs to the coolest hosts, each move
    chosen on the loads predicted after the ones before it."""
    hosts, vms = hot_and_cool()
    plan = plan_moves(hosts, vms, EVEN)
    assert [(m.src, m.dst, m.kind) for m in plan.moves] == [
        ("hot", "c1", "cpu"),
        ("hot", "c2", "cpu"),
    ]
    assert [round(m.src_load_after, 2) for m in plan.moves] == [63.75, 42.5]
    assert [round(m.dst_load_after, 2) for m in plan.moves] == [26.25, 26.25]
    assert plan.converged and plan.stuck == ()
    assert plan.moves[0].reason.startswith(
        "cpu: host-hot: CPU 85.0% ≥ HighUtilization 80% for 300 s (relief to ≤ 46.7%); "
        "vm-h0 host-hot → host-c1: CPU host-hot 85.0% → 63.8%, host-c1 5.0% → 26.2%"
    )


def test_a_short_spike_does_not_trigger_ovirts_rule() -> None:
    """Without the spread trigger, load over HighUtilization for less than the duration moves
    nothing (oVirt's CpuOverCommitDurationMinutes)."""
    hosts, vms = hot_and_cool()
    hosts = [dataclasses.replace(h, cpu_over_commit_seconds=60.0) for h in hosts]
    plan = plan_moves(hosts, vms, OVIRT_EVEN)
    assert plan.moves == () and plan.converged


def test_spread_trigger_balances_below_high_utilization() -> None:
    """A host 20 points over the mean is relieved although under 80 %; oVirt's rule alone
    (LoadSpreadThreshold 0) leaves it."""
    hosts, vms = hot_and_cool(share=70.0)
    assert plan_moves(hosts, vms, OVIRT_EVEN).moves == ()
    plan = plan_moves(hosts, vms, EVEN)
    assert len(plan.moves) == 2
    assert "CPU 70.0% > mean 26.7% + LoadSpreadThreshold 20" in plan.moves[0].reason
    assert max(m.dst_load_after for m in plan.moves) <= 26.7 + 20 - 5


def test_no_move_overloads_a_destination() -> None:
    """A VM that would push every destination over the ceiling stays; the host is reported
    stuck with the refusal of its best move."""
    hosts, vms = cluster(
        {"hot": [spec("x", 200), spec("y", 200)], "c1": [spec("c1", 160)], "c2": [spec("c2", 160)]}
    )
    plan = plan_moves(hosts, vms, OVIRT_EVEN)
    assert plan.moves == () and plan.stuck == ("hot",)
    assert any(
        n.startswith("stays a cpu source: the best move, vm-x to host-c1, is refused: ")
        and n.endswith("host-c1 would reach 90.0% CPU > 75.0%")
        for n in plan.notes["hot"]
    )


def test_moves_gain_at_least_the_margin() -> None:
    """A move that lowers the busier host by less than the hysteresis margin is not made."""
    hosts, vms = cluster({"a": [spec("x", 90), spec("y", 90), spec("z", 90), spec("w", 90)],
                          "b": [spec("b1", 250, vcpus=1)]})  # fmt: skip
    # a: 90 % (hot), b: 62.5 %; moving 22.5 % to b makes b 85 %: above the ceiling anyway
    plan = plan_moves(hosts, vms, OVIRT_EVEN, limits=BalanceLimits(cpu_margin=30))
    assert plan.moves == ()


def test_per_host_limits_and_max_moves_hold_back_and_say_so() -> None:
    """Two migrations out of one host per plan by default; a plan held back is not converged."""
    hosts, vms = cluster(
        {"hot": [spec(f"h{i}", 40) for i in range(9)], "c1": [], "c2": [], "c3": [], "c4": []}
    )
    plan = plan_moves(hosts, vms, EVEN)
    assert len(plan.moves) == 2 and not plan.converged
    assert any(n.startswith("held back: 2 migrations out") for n in plan.notes["hot"])
    assert len(plan_moves(hosts, vms, EVEN, limits=WIDE, max_moves=1).moves) == 1
    wide = plan_moves(hosts, vms, EVEN, limits=WIDE, max_moves=20)
    assert len(wide.moves) >= 4 and wide.converged
    assert max(Counter(m.dst for m in wide.moves).values()) <= 10


def test_in_flight_migrations_count_against_limits() -> None:
    """A migration still under way uses one of the source's two slots and locks its VM."""
    hosts, vms = hot_and_cool()
    flying = [MoveRecord("h3", "hot", "c2", 0.0)]
    plan = plan_moves(hosts, vms, EVEN, in_flight=flying)
    assert len(plan.moves) == 1 and plan.moves[0].vm != "h3" and not plan.converged


def test_cooldown_keeps_a_recently_moved_vm_still() -> None:
    """A VM moved less than the cooldown ago does not move; after it, it may."""
    hosts, vms = cluster({"hot": [spec("v", 200), spec("pin", 140, migratable=False)], "c1": []})
    history = MoveHistory().record("v", "elsewhere", "hot", 1000.0)
    soon = plan_moves(hosts, vms, OVIRT_EVEN, (), history, now=1300.0)
    assert soon.moves == () and soon.stuck == ("hot",)
    assert any("vm-v: it moved 300 s ago (cooldown 600 s)" in n for n in soon.notes["hot"])
    assert len(plan_moves(hosts, vms, OVIRT_EVEN, (), history, now=1700.0).moves) == 1


def test_a_vm_never_goes_back_to_a_host_it_left() -> None:
    """Within the reverse window a VM is never moved back to the host it left."""
    hosts, vms = cluster(
        {
            "hot": [spec("v", 200), spec("pin", 140, migratable=False)],
            "c1": [],
            "c2": [spec("x", 40)],
        }
    )
    history = MoveHistory().record("v", "c1", "hot", 0.0)
    plan = plan_moves(hosts, vms, OVIRT_EVEN, (), history, now=1000.0)
    assert [(m.vm, m.dst) for m in plan.moves] == [("v", "c2")]
    later = plan_moves(hosts, vms, OVIRT_EVEN, (), history, now=5000.0)
    assert [(m.vm, m.dst) for m in later.moves] == [("v", "c1")]


def test_not_migratable_vms_stay_and_the_host_is_stuck() -> None:
    """Pinned VMs never move; the note says why the host stays hot."""
    hosts, vms = cluster({"hot": [spec("p", 340, migratable=False)], "c1": []})
    plan = plan_moves(hosts, vms, EVEN)
    assert plan.moves == () and plan.stuck == ("hot",)
    assert any("vm-p: it is not migratable" in n for n in plan.notes["hot"])


def test_memory_pass_relieves_a_memory_tight_host() -> None:
    """A host under MaxFreeMemoryForOverUtilized gives a VM to a roomier host."""
    policy = make_policy("evenly_distributed", {"MaxFreeMemoryForOverUtilized": 2048})
    hosts, vms = cluster(
        {"full": [spec(f"m{i}", 5, mib=5120) for i in range(3)], "roomy": [spec("r", 5)]}
    )
    plan = plan_moves(hosts, vms, policy)
    assert [(m.src, m.dst, m.kind) for m in plan.moves] == [("full", "roomy", "memory")]
    assert plan.moves[0].src_free_mib_after == 6144
    assert "memory: host-full 1024 MiB schedulable → 6144 MiB schedulable" in plan.moves[0].reason


def test_vcpu_ratio_pass() -> None:
    """With VCpuToPhysicalCpuRatio set, a host at the ratio gives vCPUs to another."""
    policy = make_policy("evenly_distributed", {"VCpuToPhysicalCpuRatio": 2})
    hosts, vms = cluster({"a": [spec(f"v{i}", 1, vcpus=2) for i in range(4)], "b": []})
    plan = plan_moves(hosts, vms, policy)
    assert [m.kind for m in plan.moves] == ["vcpu_ratio"]


# -- vm_evenly_distributed ------------------------------------------------------------------


def test_vm_count_balancer_moves_until_under_the_threshold() -> None:
    """VMs leave a crowded host for the emptiest until it no longer beats it by
    MigrationThreshold or falls under HighVmCount."""
    hosts, vms = cluster(
        {
            "a": [spec(f"a{i}", 1) for i in range(12)],
            "b": [spec(f"b{i}", 1) for i in range(2)],
            "c": [spec(f"c{i}", 1) for i in range(5)],
        }
    )
    plan = plan_moves(hosts, vms, make_policy("vm_evenly_distributed"), limits=WIDE)
    assert [(m.src, m.dst, m.kind) for m in plan.moves] == [("a", "b", "vm_count")] * 3
    after, _ = apply_moves(hosts, vms, plan.moves)
    assert [h.vm_count for h in after] == [9, 5, 5]


# -- affinity -------------------------------------------------------------------------------


def test_hard_apart_violation_is_repaired_first() -> None:
    """Two members of a hard apart group on one host: one moves, before any load move."""
    hosts, vms = cluster({"a": [spec("w1", 10), spec("w2", 10)], "b": [], "c": [spec("x", 80)]})
    web = AffinityGroup("web", {"w1", "w2"}, "negative", hard=True)
    plan = plan_moves(hosts, vms, EVEN, [web])
    assert plan.moves[0].kind == "affinity" and plan.moves[0].dst == "b"
    assert plan.moves[0].reason.startswith(
        "affinity: repairs group 'web' (hard, apart) has vm-w1, vm-w2 on host-a"
    )
    after = {v.id: v.host for v in apply_moves(hosts, vms, plan.moves)[1]}
    assert violations([web], after) == []


def test_split_together_group_gathers_on_the_majority_host() -> None:
    """A hard together group split 2 + 1 is gathered where two of them run."""
    hosts, vms = cluster({"a": [spec("d1", 10), spec("d2", 10)], "b": [spec("d3", 10)], "c": []})
    db = AffinityGroup("db", {"d1", "d2", "d3"}, "positive", hard=True)
    plan = plan_moves(hosts, vms, EVEN, [db])
    assert [(m.vm, m.dst) for m in plan.moves] == [("d3", "a")]


def test_hard_host_rule_violation_is_repaired() -> None:
    """A VM outside its hard 'only on' hosts moves into them."""
    hosts, vms = cluster({"a": [spec("x", 10)], "b": [], "c": []})
    rack = AffinityGroup("rack", {"x"}, hosts={"c"}, hard=True)
    assert [(m.vm, m.dst) for m in plan_moves(hosts, vms, EVEN, [rack]).moves] == [("x", "c")]


def test_soft_repair_never_unbalances() -> None:
    """A soft together group is not gathered onto a host the move would over-utilize."""
    hosts, vms = cluster({"a": [spec("s1", 200), spec("f", 80)], "b": [spec("s2", 200)]})
    soft = AffinityGroup("pair", {"s1", "s2"}, "positive")
    plan = plan_moves(hosts, vms, OVIRT_EVEN, [soft])
    assert plan.moves == ()
    assert any(n.startswith("cannot repair group 'pair' (soft, together)") for n in
               plan.notes["b"] + plan.notes["a"])  # fmt: skip


def test_load_moves_keep_hard_groups() -> None:
    """A hot host whose VMs are bound together stays hot rather than split them; an apart
    member's host is never a destination."""
    hosts, vms = hot_and_cool()
    together = AffinityGroup("all", {"h0", "h1", "h2", "h3"}, "positive", hard=True)
    plan = plan_moves(hosts, vms, EVEN, [together])
    assert plan.moves == () and plan.stuck == ("hot",)
    assert any("(hard, together)" in n for n in plan.notes["hot"])
    apart = AffinityGroup("apart", {"h0", "h1", "h2", "h3", "c1"}, "negative", hard=True)
    hosts, vms = hot_and_cool()
    # the apart group is already broken on 'hot'; repairs may only use c2
    plan = plan_moves(hosts, vms, EVEN, [apart])
    assert all(m.dst == "c2" for m in plan.moves) and plan.moves


# -- the plan as a whole --------------------------------------------------------------------


def test_a_policy_without_balancer_moves_nothing() -> None:
    """Under ``none`` nothing moves and the notes say why."""
    hosts, vms = hot_and_cool()
    plan = plan_moves(hosts, vms, make_policy("none"))
    assert plan.moves == () and "policy 'none' does not balance" in plan.notes["hot"]


def test_one_up_host_has_nothing_to_balance() -> None:
    """With one Up host there is nowhere to move."""
    hosts, vms = hot_and_cool()
    hosts = [hosts[0], *(dataclasses.replace(h, status="Maintenance") for h in hosts[1:])]
    plan = plan_moves(hosts, vms, EVEN)
    assert plan.moves == () and "fewer than two Up hosts: nothing to balance" in plan.notes["hot"]


def test_unknown_balancer_is_an_error() -> None:
    """A policy naming a balancer nobody knows fails loudly."""
    hosts, vms = hot_and_cool()
    with pytest.raises(PolicyError, match="unknown balancer 'magic'"):
        plan_moves(hosts, vms, Policy("custom", balancer="magic"))


def test_summary_and_apply_moves() -> None:
    """The summary lists the moves; applying them gives the predicted hosts."""
    hosts, vms = hot_and_cool()
    plan = plan_moves(hosts, vms, EVEN)
    assert (
        plan.summary().splitlines()[0] == "balance under 'evenly_distributed': 2 moves, converged"
    )
    after, placed = apply_moves(hosts, vms, plan.moves)
    by_id = {h.id: h for h in after}
    assert round(by_id["hot"].cpu_load_percent, 2) == 42.5 and by_id["hot"].vm_count == 2
    assert by_id["c1"].memory_committed_mib == 2048
    assert sorted(v.host for v in placed if v.id.startswith("h")) == ["c1", "c2", "hot", "hot"]
    assert plan_moves(after, placed, EVEN).moves == ()


def test_history_is_immutable_and_finds_reversals() -> None:
    """Recording returns a new history; a move back to a left host is a reversal."""
    empty = MoveHistory()
    one = empty.record("v", "a", "b", 1.0)
    assert empty.records == () and len(one.records) == 1
    back = one.record("v", "b", "c", 2.0).record("v", "c", "a", 3.0)
    assert [(e.dst, r.dst) for e, r in back.reversals()] == [("b", "a")]
    assert len(back.since(2.0).records) == 2


# -- properties -----------------------------------------------------------------------------

POLICIES = [
    make_policy("evenly_distributed"),
    make_policy("evenly_distributed", {"MaxFreeMemoryForOverUtilized": 2048}),
    make_policy("vm_evenly_distributed", {"HighVmCount": 3, "MigrationThreshold": 2}),
    make_policy("power_saving", {"MaxFreeMemoryForOverUtilized": 1024}),
]


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[HostView], list[VmPlacement], list[AffinityGroup]]:
    """Random clusters: 2–8 hosts of 4–16 CPUs, 0–8 VMs each, a few hard and soft groups."""
    layout: dict[str, list[Spec]] = {}
    n = 0
    for h in range(draw(st.integers(2, 8))):
        specs = []
        for _ in range(draw(st.integers(0, 8))):
            specs.append(
                spec(
                    f"v{n}",
                    draw(st.floats(0, 100)),
                    draw(st.sampled_from([512, 1024, 2048, 4096])),
                    draw(st.integers(1, 4)),
                    draw(st.sampled_from([True, True, True, False])),
                )
            )
            n += 1
        layout[f"h{h}"] = specs
    hosts, vms = cluster(layout, cpus=draw(st.sampled_from([4, 8, 16])))
    ids = [v.id for v in vms]
    groups = []
    for g in range(draw(st.integers(0, 3)) if len(ids) >= 2 else 0):
        members = draw(st.sets(st.sampled_from(ids), min_size=2, max_size=3))
        hard_hosts = draw(st.sets(st.sampled_from([h.id for h in hosts]), max_size=2))
        groups.append(
            AffinityGroup(
                f"g{g}",
                members,
                draw(st.sampled_from(["positive", "negative", "none"])),
                hard_hosts,
                draw(st.sampled_from(["positive", "negative"])),
                hard=draw(st.booleans()),
                priority=draw(st.sampled_from([1.0, 2.0])),
            )
        )
    return hosts, vms, groups


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=clusters(), policy=st.sampled_from(POLICIES))
def test_a_plan_never_overloads_reverses_or_breaks_hard_rules(data, policy: Policy) -> None:
    """On any cluster, every planned move keeps its destination under the ceiling, moves each VM
    at most once, and breaks no hard affinity rule that held."""
    hosts, vms, groups = data
    plan = plan_moves(hosts, vms, policy, groups, max_moves=20)
    check_plan(plan, hosts, vms, groups, policy, BalanceLimits(), MoveHistory(), 0.0)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=clusters(), policy=st.sampled_from(POLICIES))
def test_plan_apply_fifty_times_converges_without_ping_pong(data, policy: Policy) -> None:
    """Fifty rounds of plan → apply on steady loads: no move is ever reversed, no VM moves more
    than twice, and the balancer falls quiet."""
    hosts, vms, groups = data
    history, _, _, per_round = rerun(hosts, vms, groups, policy, 50)
    assert history.reversals() == []
    per_vm = Counter(r.vm for r in history.records)
    assert max(per_vm.values(), default=0) <= 2
    assert per_round[-10:] == [0] * 10


def test_repairs_held_back_by_limits_leave_the_plan_unconverged() -> None:
    """Four members of a hard apart group on one host: three must leave, two do (two out per
    host), the third waits for the next plan, which the plan says."""
    hosts, vms = cluster({"a": [spec(f"w{i}", 10) for i in range(4)], "b": [], "c": [], "d": []})
    web = AffinityGroup("web", {f"w{i}" for i in range(4)}, "negative", hard=True)
    plan = plan_moves(hosts, vms, EVEN, [web])
    assert [m.kind for m in plan.moves] == ["affinity", "affinity"] and not plan.converged
    assert any(n.startswith("held back: host-a has 2 migrations out") for n in plan.notes["a"])


def test_memory_destinations_need_min_free_memory_when_set() -> None:
    """With MinFreeMemoryForUnderUtilized, only hosts with more schedulable memory than it take
    a VM in the memory pass (oVirt's memory destinations)."""
    params = {"MaxFreeMemoryForOverUtilized": 2048, "MinFreeMemoryForUnderUtilized": 14000}
    policy = make_policy("evenly_distributed", params)
    hosts, vms = cluster(
        {
            "full": [spec(f"m{i}", 5, mib=5120) for i in range(3)],
            "half": [spec("h", 5, mib=4096)],
            "roomy": [spec("r", 5)],
        }
    )
    plan = plan_moves(hosts, vms, policy)
    assert [(m.src, m.dst, m.kind) for m in plan.moves] == [("full", "roomy", "memory")]
    policy = make_policy("evenly_distributed", {**params, "MinFreeMemoryForUnderUtilized": 16000})
    assert plan_moves(hosts, vms, policy).moves == ()
