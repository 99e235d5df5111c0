"""Tests of the balancer, power saving and affinity plugged into the pure cluster manager
(``engine/decide/balancing.py`` and the manager's planner and decorate hooks).

No I/O: a manager built from a snapshot, facts in, commands out.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.affinity import AffinityGroup
from engine.decide.balancing import BalancingSettings, Planner, make_decorator, make_planner
from engine.decide.cluster import BalanceInput, ClusterManager, PlannedMove, PlannedPower
from engine.decide.clustersnapshot import ClusterSnapshot, StoredHost, StoredVm
from engine.decide.hoststate import HostEvent
from engine.decide.model import HostView, VmRequest
from engine.decide.moves import MoveHistory, VmPlacement
from engine.decide.policies import make_policy
from engine.decide.powersave import POWER_OFF, POWER_ON, SHORTAGE, PowerRecord
from engine.sim.scenario import ScenarioError, find, parse
from engine.store.rows import VmStatus

FAST = BalancingSettings(interval=10, settle=0)


def manager(
    *vms: StoredVm,
    policy: str = "evenly_distributed",
    groups=(),
    parameters=None,
    hosts=("h1", "h2", "h3"),
    settings=FAST,
    **kwargs,
) -> ClusterManager:
    """A manager over Up hosts of 4 CPUs and 8 GiB with the planner and decorator plugged in."""
    stored = tuple(StoredHost(h, h, "Up", 4, 8192, power_management=True) for h in hosts)
    chosen = make_policy(policy, parameters or {})
    return ClusterManager.from_snapshot(
        0.0, ClusterSnapshot(stored, tuple(vms), **kwargs), policy=chosen,
        planner=make_planner(groups=groups, settings=settings),
        decorate=make_decorator(groups), restarted=False,
    )  # fmt: skip


def up(name: str, host: str, **fields) -> StoredVm:
    return StoredVm(name, name, fields.pop("memory_mib", 1024), status="Up", host=host, **fields)


def loads(m: ClusterManager, now: float, hosts: dict[str, float], vms: dict[str, tuple]) -> None:
    """Feed host loads and VM loads (``vm: (host, cpu)``)."""
    m.observe(now, [f.HostLoad(h, load) for h, load in hosts.items()])
    m.observe(now, [f.VmLoad(host, vm, cpu) for vm, (host, cpu) in vms.items()])


def types(commands) -> list[str]:
    return [x.type for x in commands if isinstance(x, c.Event)]


def of(commands, kind) -> list:
    return [x for x in commands if isinstance(x, kind)]


def hot_cluster() -> ClusterManager:
    """h1 at 85 % with four VMs of 20 points each, h2 and h3 idle."""
    m = manager(*(up(n, "h1") for n in "abcd"))
    loads(m, 0.0, {"h1": 85, "h2": 5, "h3": 5}, {n: ("h1", 80) for n in "abcd"})
    return m


def test_the_planner_turns_plan_moves_into_checked_migrations_with_reasons():
    """The evenly_distributed planner sees each VM's CPU usage (VmLoad facts) and proposes the
    moves plan_moves chooses; the manager starts them as migrations with BALANCE_MIGRATION
    events carrying the balancer's reason, and records them in its move history."""
    m = hot_cluster()
    out = m.tick(1.0)
    moves = of(out, c.MigrateVm)
    assert [(x.vm, x.src, x.dst) for x in moves] == [("a", "h1", "h2"), ("b", "h1", "h3")]
    assert types(out) == ["BALANCE_MIGRATION", "BALANCE_MIGRATION"]
    assert "LoadSpreadThreshold" in moves[0].reason and "h1 85.0% → 65.0%" in moves[0].reason
    assert [(r.vm, r.src, r.dst, r.time) for r in m.state.moves.records] == [
        ("a", "h1", "h2", 1.0), ("b", "h1", "h3", 1.0)]  # fmt: skip


def test_the_move_history_survives_an_engine_restart():
    """The moves are in the snapshot; a manager rebuilt from it (with a new planner) keeps the
    cooldown: the VM that just moved is not moved again, whatever the loads say."""
    m = hot_cluster()
    m.tick(1.0)
    for vm, host in (("a", "h2"), ("b", "h3")):
        m.observe(4.0, [f.JobDone("migrate", vm, host, True), f.VmSeen(host, vm, VmStatus.UP)])
    m.tick(4.0)
    snap = m.snapshot()
    assert {r.vm for r in snap.moves} == {"a", "b"}
    again = ClusterManager.from_snapshot(
        10.0, snap, policy=make_policy("evenly_distributed"),
        planner=make_planner(settings=FAST), restarted=False,
    )  # fmt: skip
    # h2 is now the hot one, with only a (moved 9 s ago) on it.
    loads(again, 10.0, {"h1": 45, "h2": 90, "h3": 25}, {"a": ("h2", 80)})
    out = again.tick(11.0)
    assert of(out, c.MigrateVm) == []
    [stuck] = [e for e in out if isinstance(e, c.Event)]
    assert stuck.type == "BALANCE_HOST_STUCK" and "cooldown" in stuck.message


def test_the_planner_waits_for_its_interval_and_for_the_cluster_to_settle():
    """Plans are at most every interval, and not before the cluster has been calm for the
    settle time (load samples must show the last moves first)."""
    asked = []
    planner = Planner(settings=BalancingSettings(interval=30, settle=5))
    policy = make_policy("evenly_distributed")

    def seen(now, calm_since=0.0):
        return BalanceInput(now, policy, (), (), calm_since=calm_since)

    for now, since in ((1.0, 0.0), (6.0, 0.0), (7.0, 0.0), (36.0, 0.0), (62.0, 60.0), (66.0, 60.0)):
        before = planner._next
        planner(seen(now, since))
        asked.append(planner._next != before)
    assert asked == [False, True, False, True, False, True]


def test_stuck_hosts_are_reported_once_and_their_relief_once():
    """A host that needs relief and has no allowed move gives one BALANCE_HOST_STUCK event (not
    one per plan), and one BALANCE_HOST_RELIEVED when it is no longer stuck."""
    m = manager(*(up(n, "h1") for n in "abcd"), parameters={"CpuOverCommitDurationMinutes": 1})
    loads(m, 0.0, {"h1": 85, "h2": 58, "h3": 60}, {n: ("h1", 80) for n in "abcd"})
    first, second = m.tick(61.0), m.tick(71.0)
    assert types(first) == ["BALANCE_HOST_STUCK"] and types(second) == []
    assert "h2 would reach 78.0% CPU > 75.0%" in first[0].message
    loads(m, 80.0, {"h1": 40}, {})
    assert types(m.tick(81.0)) == ["BALANCE_HOST_RELIEVED"]


def test_a_move_the_scheduler_refuses_is_an_event_not_a_migration():
    """Every planned move passes the scheduler: a move to a host its hard affinity forbids
    (here the group was defined behind the planner's back) is refused with the reason."""
    planner = make_planner(settings=FAST)

    def stubborn(seen):
        return [PlannedMove("a", "h2", "testing"), *planner(seen)]

    group = AffinityGroup("apart", {"a", "z"}, "negative", hard=True)
    stored = tuple(StoredHost(h, h, "Up", 4, 8192) for h in ("h1", "h2"))
    m = ClusterManager.from_snapshot(
        0.0, ClusterSnapshot(stored, (up("a", "h1"), up("z", "h2"))),
        policy=make_policy("evenly_distributed"), planner=stubborn,
        decorate=make_decorator([group]), restarted=False,
    )  # fmt: skip
    out = m.tick(1.0)
    assert of(out, c.MigrateVm) == []
    [refused] = [e for e in out if isinstance(e, c.Event)]
    assert refused.type == "VM_MIGRATION_REFUSED" and "has z on this host" in refused.message


def test_power_saving_switches_an_empty_host_off_through_maintenance():
    """A POWER_OFF action puts the empty host into maintenance (an event says why), and once it
    is in Maintenance the manager asks for it to be powered off."""
    params = {"EnableAutomaticHostPowerManagement": True, "HostsInReserve": 1}
    m = manager(up("a", "h1"), policy="power_saving", parameters=params)
    out = m.tick(1.0)
    assert types(out)[:2] == ["POWER_SAVING_HOST_OFF", "HOST_MAINTENANCE_STARTED"]
    assert out[0].host == "h2" and "1 empty hosts stay in reserve" in out[0].message
    out = m.tick(2.0)
    assert "HOST_MAINTENANCE" in types(out)
    assert of(out, c.PowerHost) == [
        c.PowerHost("h2", c.POWER_OFF_HOST, "power saving: empty and idle")
    ]
    assert [(r.host, r.action) for r in m.snapshot().power] == [("h2", POWER_OFF)]


def test_power_saving_wakes_a_host_when_vms_wait_and_activates_it_when_it_answers():
    """An HA VM no Up host can take makes the cluster short of capacity: the host power saving
    switched off (the power history says so, even after an engine restart) is powered on at
    once, although the cluster is not calm, and activated when its agent connects (a missed
    heartbeat is no sign of life); then the VM is restarted there."""
    params = {"EnableAutomaticHostPowerManagement": True}
    big = StoredVm("big", "big", 7000, ha=True, status="Down", exit="crashed")
    stored = (
        *(StoredHost(h, h, "Up", 4, 8192, power_management=True) for h in ("h1", "h2")),
        StoredHost("h3", "h3", "Maintenance", 4, 8192, power_management=True),
    )
    snapshot = ClusterSnapshot(
        stored,
        (big, up("x", "h1", memory_mib=7000), up("y", "h2", memory_mib=7000)),
        power=(PowerRecord("h3", POWER_OFF, 0.0),),
    )
    m = ClusterManager.from_snapshot(
        0.0, snapshot, policy=make_policy("power_saving", params),
        planner=make_planner(settings=FAST), restarted=False,
    )  # fmt: skip
    out = m.tick(1.0)
    assert types(out)[-2:] == ["HA_VM_RESTART_RETRY", "POWER_SAVING_HOST_ON"]
    assert "1 VMs wait" in out[-2].message
    assert of(out, c.PowerHost) == [c.PowerHost("h3", c.POWER_ON_HOST, out[-2].details["reason"])]
    m.observe(20.0, [f.HostSeen("h3", HostEvent.HEARTBEAT_MISSED)])
    assert m.state.hosts["h3"].state == "Maintenance"
    m.observe(30.0, [f.HostSeen("h3", HostEvent.CONNECTED)])
    out = m.tick(30.0)
    assert types(out)[:2] == ["HOST_ACTIVATED", "HA_VM_RESTART"]
    assert of(out, c.StartVm)[0].host == "h3"


def test_power_saving_actions_the_manager_checks():
    """Power actions on hosts that changed meanwhile are ignored; a shortage is kept (only the
    latest) in the power history."""
    m = manager(up("a", "h1"))
    m._power(PlannedPower("h1", POWER_OFF, "x"), 1.0, True)  # h1 runs a VM
    m._power(PlannedPower("h2", POWER_ON, "x"), 1.0, True)  # not switched off by us
    m._power(PlannedPower("", SHORTAGE, "short"), 2.0, True)
    m._power(PlannedPower("", SHORTAGE, "short"), 3.0, True)
    assert m.tick(4.0) == [] or of(m.tick(4.0), c.PowerHost) == []
    assert [(r.action, r.time) for r in m.state.power.records] == [(SHORTAGE, 3.0)]


def test_the_decorator_gives_requests_their_groups_and_ignores_evacuated_hosts():
    """make_decorator reads the current groups from a source each time; members on hosts being
    evacuated do not count."""
    groups = []
    decorate = make_decorator(lambda: groups, names={"a": "web-a", "b": "web-b"})
    request = VmRequest("a", "web-a", 512, 1)
    assert decorate(request, {"b": "h1"}, frozenset()).affinity_groups == ()
    groups.append(AffinityGroup("web", {"a", "b"}, "positive", hard=True))
    decorated = decorate(request, {"b": "h1"}, frozenset())
    assert [g.name for g in decorated.affinity_groups] == ["web"]
    assert [(p.vm_name, p.host_id) for p in decorated.affinity_peers] == [("web-b", "h1")]
    assert decorate(request, {"b": "h1"}, frozenset({"h1"})).affinity_peers == ()


def test_power_saving_plan_gives_power_items_after_moves():
    """Under power_saving the planner returns events, then moves, then power actions and a
    shortage record, from plan_power_saving."""
    policy = make_policy(
        "power_saving", {"EnableAutomaticHostPowerManagement": True, "HostsInReserve": 2}
    )
    hosts = tuple(HostView(h, h, "Up", 4, 8192, 8192) for h in ("h1", "h2"))
    hosts = (replace(hosts[0], vm_count=1, memory_committed_mib=1024), hosts[1])
    seen = BalanceInput(
        0.0,
        policy,
        hosts,
        (),
        vms=(VmPlacement("a", "a", "h1", 1024, 1),),
        history=MoveHistory(),
        pm_hosts=frozenset({"h1", "h2"}),
    )
    out = make_planner(settings=FAST)(seen)
    assert out == [PlannedPower("", SHORTAGE, "the reserve is 1 empty hosts < HostsInReserve 2")]


# -- the simulator's support ---------------------------------------------------------------

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
NEW = (
    "balance-cpu-noisy-no-thrash",
    "balance-vm-count",
    "balance-memory",
    "balance-refused-overload",
    "power-saving-consolidate-off",
    "power-saving-wake-up",
    "power-saving-no-flapping",
    "affinity-ha-hard-apart",
    "affinity-maintenance-together",
    "affinity-soft-repair",
    "affinity-conflict-at-definition",
)


def test_the_balancing_power_and_affinity_scenarios_exist():
    """The scenarios for balancing, power saving and affinity are there with their golden logs
    (tests/engine/test_scenarios.py runs them), bringing the total to at least 46."""
    found = {d.name for d in find(SCENARIOS)}
    assert set(NEW) <= found and len(found) >= 46
    logs = {name: (SCENARIOS / name / "expected.log").read_text() for name in NEW}
    assert "BALANCE_MIGRATION" in logs["balance-cpu-noisy-no-thrash"]
    assert "POWER_SAVING_HOST_ON" in logs["power-saving-wake-up"]
    assert logs["power-saving-no-flapping"].count("POWER_SAVING_HOST_ON") == 1
    assert "REFUSED" in logs["affinity-conflict-at-definition"]


BASE = {"hosts": {"h1": {"memory": 4096}}, "vms": {"a": {"memory": 512}}}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"groups": {"g": {"vms": ["zz"]}}}, "group 'g': no vm 'zz'"),
        ({"groups": {"g": {"colour": "red"}}}, "unknown field"),
        ({"groups": {"g": {"vm": "sideways"}}}, "polarity"),
        ({"balancing": {"speed": 3}}, "unknown field 'speed'"),
        ({"balancing": {"interval": -1}}, "≥ 0"),
        ({"commands": [{"at": 1, "do": "load vm zz cpu 5"}]}, "no VM 'zz'"),
        ({"commands": [{"at": 1, "do": "group g apart hard a,zz"}]}, "no VM 'zz'"),
    ],
)
def test_scenario_groups_balancing_and_commands_are_checked(extra, message):
    """Mistakes in groups, balancing settings and the new commands are refused at load time,
    saying where."""
    with pytest.raises(ScenarioError, match=message):
        parse({**BASE, **extra})


def test_scenario_groups_and_balancing_are_read():
    """``groups:`` become AffinityGroups with the words translated; ``balancing:`` fills the
    planner's settings, limits and power limits."""
    scenario = parse({
        **BASE,
        "groups": {"g": {"vms": ["a"], "vm": "apart", "hard": True, "hosts": ["h1"],
                         "host": "never", "priority": 2}},
        "balancing": {"interval": 5, "cooldown_seconds": 30, "min_on_seconds": 60},
    })  # fmt: skip
    [group] = scenario.groups
    assert (group.vm_polarity.value, group.host_polarity.value, group.hard) == (
        "negative", "negative", True)  # fmt: skip
    settings = scenario.balancing
    assert (settings.interval, settings.limits.cooldown_seconds) == (5, 30)
    assert settings.power_limits.min_on_seconds == 60
