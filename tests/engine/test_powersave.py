"""Tests for engine.decide.powersave: consolidation and switching hosts off and on."""

from __future__ import annotations

import dataclasses
from collections import Counter

from balance_harness import cluster, rerun, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.decide.affinity import AffinityGroup
from engine.decide.balance import MoveHistory, apply_moves, plan_moves
from engine.decide.model import HOST_UP, HostView
from engine.decide.policies import make_policy
from engine.decide.powersave import (
    POWER_OFF,
    POWER_ON,
    SHORTAGE,
    PowerHistory,
    PowerLimits,
    plan_power_saving,
)

LOW = 300.0  # seconds under LowUtilization: longer than the default 2 minutes
SAVING = make_policy("power_saving")
PM = make_policy("power_saving", {"EnableAutomaticHostPowerManagement": True, "HostsInReserve": 1})


def idle(hosts: list[HostView], *ids: str) -> list[HostView]:
    """:returns: ``hosts`` with ``ids`` under LowUtilization for :data:`LOW` seconds."""
    return [
        dataclasses.replace(h, cpu_over_commit_seconds=LOW) if h.id in ids else h for h in hosts
    ]


def host(id: str, status: str = HOST_UP, cpus: int = 4, **kw) -> HostView:
    """:returns: an empty host ``host-<id>`` with ``cpus`` CPUs and 16 GiB."""
    return HostView(id, f"host-{id}", status, cpus, 16384, 16384, **kw)


# -- consolidation --------------------------------------------------------------------------


def test_an_idle_host_is_emptied_onto_the_fullest_that_fits() -> None:
    """Both VMs of a host under LowUtilization go to the fullest host that stays under the
    ceiling, never to an emptier one."""
    hosts, vms = cluster(
        {
            "idle": [spec("i1", 20), spec("i2", 20)],
            "busy": [spec("b1", 200)],
            "mid": [spec("m1", 120)],
            "empty": [],
        }
    )
    plan = plan_moves(idle(hosts, "idle"), vms, SAVING)
    assert [(m.vm, m.src, m.dst, m.kind) for m in plan.moves] == [
        ("i1", "idle", "busy", "consolidate"),
        ("i2", "idle", "busy", "consolidate"),
    ]
    assert plan.moves[0].reason.startswith(
        "consolidate: host-idle is under-utilized (CPU under-utilized: load 10.0% < "
        "LowUtilization 20% for 300 s (≥ 120 s)); emptying it (2 VMs) onto fuller hosts"
    )
    assert plan.moves[-1].dst_load_after <= 75.0


def test_a_host_is_emptied_whole_or_not_at_all() -> None:
    """If one VM fits nowhere fuller, none of the host's VMs moves."""
    hosts, vms = cluster(
        {"idle": [spec("small", 10), spec("wide", 15, vcpus=4)], "busy": [spec("b", 260)]}
    )
    plan = plan_moves(idle(hosts, "idle"), vms, SAVING)
    assert plan.moves == ()
    assert any(
        n.startswith("not emptied: vm-wide fits on no fuller host") for n in plan.notes["idle"]
    )


def test_a_pinned_vm_keeps_its_host_up() -> None:
    """A host with a VM that may not migrate is not emptied."""
    hosts, vms = cluster(
        {"idle": [spec("p", 10, migratable=False), spec("q", 10)], "busy": [spec("b", 200)]}
    )
    plan = plan_moves(idle(hosts, "idle"), vms, SAVING)
    assert plan.moves == ()
    assert "not emptied: vm-p may not move: it is not migratable" in plan.notes["idle"]


def test_an_idle_cluster_packs_toward_its_fullest_host() -> None:
    """When every host is idle, VMs flow from the emptiest hosts to the fullest, never back."""
    layout = {f"h{i}": [spec(f"v{i}-{j}", 5 + i) for j in range(i + 1)] for i in range(4)}
    hosts, vms = cluster(layout)
    hosts = idle(hosts, *layout)
    history, hosts, vms, per_round = rerun(hosts, vms, [], SAVING, 10)
    assert history.reversals() == []
    assert Counter(v.host for v in vms) == Counter({"h3": 10})
    assert per_round[-3:] == [0, 0, 0]


def test_over_utilized_hosts_are_relieved_by_packing() -> None:
    """A hot host gives VMs to the fullest host that stays under the ceiling, not the emptiest."""
    hosts, vms = cluster(
        {"hot": [spec(f"h{i}", 85) for i in range(4)], "half": [spec("x", 200)], "empty": []}
    )
    plan = plan_moves(hosts, vms, SAVING)
    assert plan.moves and plan.moves[0].dst == "half"
    assert all(m.dst_load_after <= 75.0 for m in plan.moves)


def test_consolidation_keeps_hard_apart_groups() -> None:
    """An apart member's host is never the destination of another member."""
    hosts, vms = cluster(
        {"idle": [spec("a1", 10)], "busy": [spec("a2", 200)], "mid": [spec("m", 100)]}
    )
    apart = AffinityGroup("ha", {"a1", "a2"}, "negative", hard=True)
    plan = plan_moves(idle(hosts, "idle"), vms, SAVING, [apart])
    assert [(m.vm, m.dst) for m in plan.moves] == [("a1", "mid")]


# -- host power -----------------------------------------------------------------------------


def test_power_management_off_plans_no_action() -> None:
    """Without EnableAutomaticHostPowerManagement nothing is switched."""
    hosts = [host("a"), host("b"), host("c")]
    plan = plan_power_saving(hosts, [], SAVING, pm_hosts={"a", "b", "c"})
    assert plan.actions == () and plan.notes == ("EnableAutomaticHostPowerManagement is off",)


def test_empty_hosts_above_the_reserve_are_switched_off_one_per_plan() -> None:
    """With three empty hosts and a reserve of one, one managed host is switched off: the
    smallest."""
    hosts, vms = cluster({"busy": [spec("b", 100)]})
    hosts += [host("e1"), host("e2", cpus=2), host("e3")]
    plan = plan_power_saving(hosts, vms, PM, pm_hosts={"e1", "e2", "e3"})
    assert [(a.host, a.action) for a in plan.actions] == [("e2", POWER_OFF)]
    assert plan.actions[0].reason == (
        "power saving: host-e2 is empty and idle (0.0% CPU) and 2 empty hosts stay in reserve "
        "(HostsInReserve 1); maintenance, then power off"
    )


def test_only_power_managed_hosts_are_switched_off() -> None:
    """Hosts outside ``pm_hosts`` count in the reserve but are never switched off."""
    hosts = [host("e1"), host("e2")]
    plan = plan_power_saving(hosts, [], PM, pm_hosts=set())
    assert plan.actions == ()
    assert "the empty hosts above the reserve are not power-managed" in plan.notes


def test_the_reserve_is_kept() -> None:
    """With exactly HostsInReserve empty hosts nothing is switched."""
    hosts, vms = cluster({"busy": [spec("b", 100)]})
    plan = plan_power_saving([*hosts, host("e1")], vms, PM, pm_hosts={"e1"})
    assert plan.actions == ()


def test_a_host_being_filled_is_not_switched_off() -> None:
    """A host receiving VMs in this plan is not empty for power management."""
    hosts, vms = cluster({"idle": [spec("i", 10)], "target": []})
    hosts = idle(hosts, "idle")
    hosts = [dataclasses.replace(hosts[1], cpu_load_percent=30.0), hosts[0]]
    plan = plan_power_saving(hosts, vms, PM, pm_hosts={"idle", "target"})
    assert [(m.vm, m.dst) for m in plan.balance.moves] == [("i", "target")]
    assert plan.actions == ()


def test_reserve_below_target_powers_on_our_host_after_the_minimum_off_time() -> None:
    """A host power saving switched off is powered on when the reserve is short, once it has
    been off long enough; an administrator's maintenance host is never touched."""
    hosts, vms = cluster({"busy": [spec("b", 100)]})
    hosts += [host("off", "Down"), host("admin", "Maintenance")]
    power = PowerHistory().record("off", POWER_OFF, 0.0)
    kw = {"pm_hosts": {"off", "admin"}, "power_history": power}
    early = plan_power_saving(hosts, vms, PM, now=100.0, **kw)
    assert early.actions == ()
    assert any("yet (minimum off time)" in n for n in early.notes)
    late = plan_power_saving(hosts, vms, PM, now=1000.0, **kw)
    assert [(a.host, a.action) for a in late.actions] == [("off", POWER_ON)]
    assert "the reserve is 0 empty hosts < HostsInReserve 1" in late.actions[0].reason


def test_waiting_vms_power_a_host_on_at_once() -> None:
    """VMs no Up host can take wake a switched-off host without waiting the minimum off time."""
    hosts, vms = cluster({"busy": [spec("b", 100)]})
    hosts += [host("spare"), host("off", "Down")]
    power = PowerHistory().record("off", POWER_OFF, 0.0)
    plan = plan_power_saving(
        hosts, vms, PM, now=10.0, pm_hosts={"off"}, power_history=power, waiting_vms=3
    )
    assert [(a.host, a.action) for a in plan.actions] == [("off", POWER_ON)]
    assert plan.actions[0].reason.startswith("power saving: 3 VMs wait that no Up host can take")


def test_a_stuck_hot_host_powers_a_host_on() -> None:
    """An over-utilized host with nowhere to send a VM wakes a host."""
    hosts, vms = cluster({"hot": [spec("x", 200), spec("y", 200)], "full": [spec("z", 280)]})
    hosts += [host("off", "Down")]
    power = PowerHistory().record("off", POWER_OFF, 0.0)
    plan = plan_power_saving(hosts, vms, PM, now=10.0, pm_hosts={"off"}, power_history=power)
    assert plan.balance.stuck == ("hot",)
    assert [(a.host, a.action) for a in plan.actions] == [("off", POWER_ON)]
    assert "over-utilized hosts have nowhere to send a VM (host-hot)" in plan.actions[0].reason


def test_a_booting_host_is_waited_for() -> None:
    """While a powered-on host boots, no second one is woken for the same need."""
    hosts, vms = cluster({"busy": [spec("b", 100)]})
    hosts += [host("boot", "Down"), host("off", "Down")]
    power = PowerHistory().record("off", POWER_OFF, 0.0).record("boot", POWER_ON, 1000.0)
    plan = plan_power_saving(
        hosts, vms, PM, now=1100.0, pm_hosts={"boot", "off"}, power_history=power, waiting_vms=1
    )
    assert plan.actions == ()
    assert any("waiting for host-boot to come Up" in n for n in plan.notes)


def test_no_host_is_switched_off_soon_after_one_was_powered_on() -> None:
    """Minimum on time: an empty host above the reserve stays on for a while after a wake-up."""
    hosts, vms = cluster({"busy": [spec("b", 100)]})
    hosts += [host("e1"), host("e2")]
    power = PowerHistory().record("e2", POWER_ON, 1000.0)
    kw = {"pm_hosts": {"e1", "e2"}, "power_history": power}
    assert plan_power_saving(hosts, vms, PM, now=1500.0, **kw).actions == ()
    assert len(plan_power_saving(hosts, vms, PM, now=3000.0, **kw).actions) == 1


def simulate_power(bursts: list[int], limits: PowerLimits) -> list[tuple[float, str, str]]:
    """
    Run power planning once a minute while bursts of load come and go: in minute ``m``,
    ``bursts[m]`` VMs each take an empty Up host for that minute, and those that find none wait.
    Actions take effect at once; a host powered on is Up two minutes later.

    :returns: the power actions, as (time, host, action).
    """
    states = {"busy": HOST_UP, **{f"e{i}": HOST_UP for i in range(5)}}
    busy_vms = cluster({"busy": [spec("b", 100)]})[1]
    power, actions, booting = PowerHistory(), [], {}
    for minute, burst in enumerate(bursts):
        now = minute * 60.0
        for h, t in list(booting.items()):
            if now - t >= 120:
                states[h] = HOST_UP
                del booting[h]
        empty = [h for h, s in states.items() if s == HOST_UP and h != "busy"]
        taken = set(empty[:burst])
        hosts = [host(h, s, vm_count=int(h == "busy" or h in taken)) for h, s in states.items()]
        plan = plan_power_saving(
            hosts, busy_vms, PM, now=now, pm_hosts=set(states) - {"busy"},
            power_history=power, waiting_vms=burst - len(taken), power_limits=limits,
        )  # fmt: skip
        power = plan.recorded(power, now)
        for a in plan.actions:
            actions.append((now, a.host, a.action))
            if a.action == POWER_OFF:
                states[a.host] = "Down"
            else:
                booting[a.host] = now
    return actions


def test_bursts_of_load_do_not_flap_hosts() -> None:
    """Bursts every six minutes: spare hosts are switched off at the start, woken as bursts
    find no host, then stay on while the bursts keep coming; only a calm longer than the
    minimum on time switches them off again."""
    limits = PowerLimits(min_on_seconds=1200, min_off_seconds=900, boot_seconds=600)
    bursts = [0] * 10 + ([0] * 5 + [3]) * 15 + [0] * 40
    actions = simulate_power(bursts, limits)
    offs = [t for t, _h, a in actions if a == POWER_OFF]
    ons = [t for t, _h, a in actions if a == POWER_ON]
    burst_times = [m * 60.0 for m, b in enumerate(bursts) if b]
    assert ons and offs
    assert all(not (burst_times[0] < t < burst_times[-1]) for t in offs)
    assert all(t >= burst_times[-1] + limits.min_on_seconds for t in offs if t > burst_times[0])
    assert max(Counter(h for _t, h, _a in actions).values()) <= 3


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(
    loads=st.lists(st.lists(st.floats(0, 60), max_size=5), min_size=2, max_size=7),
    low_for=st.sampled_from([0.0, LOW]),
)
def test_consolidation_converges_without_reversal(loads: list[list[float]], low_for: float):
    """On any cluster, repeated power-saving plans move each VM at most twice, never back, and
    never over the ceiling."""
    layout = {
        f"h{i}": [spec(f"v{i}-{j}", c) for j, c in enumerate(vm)] for i, vm in enumerate(loads)
    }
    hosts, vms = cluster(layout)
    hosts = [dataclasses.replace(h, cpu_over_commit_seconds=low_for) for h in hosts]
    history, _, _, per_round = rerun(hosts, vms, [], SAVING, 30)
    assert history.reversals() == []
    assert max(Counter(r.vm for r in history.records).values(), default=0) <= 2
    assert per_round[-5:] == [0] * 5


def test_history_helpers() -> None:
    """The power history finds a host's last action and the last power-on."""
    power = PowerHistory().record("a", POWER_OFF, 1.0).record("a", POWER_ON, 5.0)
    assert power.last("a").action == POWER_ON and power.last("b") is None
    assert power.last_need() == 5.0
    assert power.record("", SHORTAGE, 9.0).last_need() == 9.0
    assert MoveHistory().records == () and apply_moves([], [], []) == ([], [])
