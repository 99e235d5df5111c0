"""Tests of the pure cluster manager: host liveness, the view of VMs, the safety rule, the
snapshot it restarts from, its settings and its extension points.

No I/O, no reactor: facts in, commands out. The helpers here are shared with the other
``test_cluster_manager_*`` modules (fencing, HA restarts, maintenance).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.cluster import ClusterManager, PlannedMove, RequestRefused
from engine.decide.clustersnapshot import ClusterSnapshot, StoredHost, StoredJob, StoredVm
from engine.decide.clusterstate import HA_TIMING, ExitReason, HaSettings
from engine.decide.hoststate import HostEvent
from engine.store.rows import VmStatus

GRACE = HA_TIMING.grace_period


def vm(name: str, host: str | None = None, **fields) -> StoredVm:
    """An HA VM of 512 MiB (unless said otherwise), Up on ``host`` or Down."""
    status = fields.pop("status", VmStatus.UP if host else VmStatus.DOWN)
    values = {"memory_mib": 512, "ha": True, **fields}
    return StoredVm(name, name, status=str(status), host=host, **values)


def cluster(
    *vms: StoredVm,
    hosts: Iterable[str] = ("h1", "h2", "h3"),
    memory: int = 4096,
    pm: bool = True,
    now: float = 0.0,
    restarted: bool = False,
    jobs: Iterable[StoredJob] = (),
    statuses: dict[str, str] | None = None,
    **settings,
) -> ClusterManager:
    """A manager over Up hosts (ids are names), healthy at ``now`` unless ``restarted``."""
    statuses = statuses or {}
    stored = tuple(
        StoredHost(h, h, statuses.get(h, "Up"), 4, memory, power_management=pm) for h in hosts
    )
    snapshot = ClusterSnapshot(stored, tuple(vms), tuple(jobs))
    return ClusterManager.from_snapshot(
        now, snapshot, HaSettings.from_mapping(settings), restarted=restarted
    )


def types(commands: Iterable[c.Command]) -> list[str]:
    """The event types among ``commands``, in order."""
    return [x.type for x in commands if isinstance(x, c.Event)]


def of(commands: Iterable[c.Command], kind: type) -> list:
    """The commands of one kind."""
    return [x for x in commands if isinstance(x, kind)]


def lose(manager: ClusterManager, host: str, now: float = 10.0) -> list[c.Command]:
    """The link to ``host`` drops at ``now``; tick until its grace period is over."""
    manager.observe(now, [f.HostSeen(host, HostEvent.LINK_LOST)])
    out = manager.tick(now)
    return out + manager.tick(now + GRACE)


def answer(manager: ClusterManager, host: str, now: float, *vms: str) -> list[c.Command]:
    """``host`` answers at ``now`` listing ``vms`` Up; :returns: the next tick's commands."""
    listed = dict.fromkeys(vms, VmStatus.UP)
    manager.observe(now, [f.HostSeen(host, HostEvent.HEARTBEAT_OK), f.HostVms(host, listed)])
    return manager.tick(now)


def fence_off(manager: ClusterManager, host: str, now: float) -> list[c.Command]:
    """``host``'s power management says it is off at ``now``; :returns: the tick's commands."""
    manager.observe(now, [f.PowerSeen(host, f.POWER_OFF)])
    return manager.tick(now)


# -- liveness and the view of VMs ------------------------------------------------------------


def test_a_silent_host_goes_connecting_then_nonresponsive_and_its_vms_unknown():
    """A lost link makes the host Connecting at once; after the grace period it is
    NonResponsive, every VM on it Unknown, each change recorded with a reason."""
    manager = cluster(vm("web", "h2"), vm("db", "h2", ha=False))
    manager.observe(10.0, [f.HostSeen("h2", HostEvent.LINK_LOST, "reset")])
    first = manager.tick(10.0)
    assert types(first) == ["HOST_CONNECTING"]
    assert of(first, c.SetHostStatus)[0].status == "Connecting"
    assert manager.tick(10.0 + GRACE - 1) == []
    late = manager.tick(10.0 + GRACE)
    assert [s.status for s in of(late, c.SetHostStatus)] == ["NonResponsive"]
    assert [(m.vm, m.host) for m in of(late, c.MarkVmUnknown)] == [("db", "h2"), ("web", "h2")]
    assert types(late)[:3] == ["HOST_NON_RESPONSIVE", "VM_UNKNOWN", "VM_UNKNOWN"]
    assert manager.state.vms["web"].status is VmStatus.UNKNOWN


def test_an_unknown_vm_is_never_started_without_proof():
    """However long it waits and however much room there is, a VM in Unknown is not started
    while its host is neither fenced nor answering (here: no power management)."""
    manager = cluster(vm("web", "h2"), pm=False, fence_quiet_time=10)
    out = lose(manager, "h2")
    for now in range(16, 200):
        for command in out:
            if isinstance(command, c.FenceHost):
                manager.observe(now, [f.FenceDone("h2", command.method, f.FAILED, "unreachable")])
        out = manager.tick(float(now))
        assert not of(out, c.StartVm) and not of(out, c.MarkVmDown)
    assert manager.state.vms["web"].status is VmStatus.UNKNOWN


def test_a_host_that_answers_again_says_which_vms_are_alive():
    """When a NonResponsive host answers, the VMs it lists are Up again (no restart) and a VM it
    does not list is Down, proven by its agent: an HA one is restarted elsewhere."""
    manager = cluster(vm("web", "h2"), vm("api", "h2"))
    lose(manager, "h2")
    out = answer(manager, "h2", 20.0, "web")
    assert manager.state.vms["web"].status is VmStatus.UP
    [down] = of(out, c.MarkVmDown)
    assert (down.vm, down.exit) == ("api", ExitReason.LOST)
    assert "answered and does not run it" in down.reason
    [start] = of(out, c.StartVm)
    assert start.vm == "api" and start.decision is not None
    assert "HOST_RECOVERED" in types(out) and "VM_STATUS_CHANGED" in types(out)


def test_facts_about_unknown_things_are_ignored():
    """Facts about hosts or VMs the manager does not know change nothing and raise nothing; a
    Down report with an unknown exit reason counts as a crash."""
    manager = cluster(vm("web", "h1"))
    manager.observe(
        1.0,
        [
            f.HostSeen("nowhere", HostEvent.LINK_LOST),
            f.VmSeen("h1", "ghost", VmStatus.UP),
            f.JobDone("start", "web", "h1", True),
            f.FenceDone("h1", "power", f.FAILED),
        ],
    )
    assert manager.tick(1.0) == []
    manager.observe(2.0, [f.VmSeen("h1", "web", VmStatus.DOWN, "exploded")])
    out = manager.tick(2.0)
    assert of(out, c.MarkVmDown)[0].exit == ExitReason.CRASHED
    assert of(out, c.StartVm)


def test_a_stale_list_does_not_resurrect_a_vm_being_stopped():
    """While a user's stop is under way, a host list still showing the VM leaves it stopping;
    the Down report (or a list without it) ends it as stopped by the user, never restarted."""
    manager = cluster(vm("web", "h1"))
    manager.stop_vm(1.0, "web")
    out = manager.tick(1.0)
    assert types(out) == ["VM_STOPPING"] and of(out, c.StopVm)[0].host == "h1"
    assert answer(manager, "h1", 2.0, "web") == []
    assert manager.state.vms["web"].status is VmStatus.POWERING_DOWN
    out = answer(manager, "h1", 4.0)
    assert of(out, c.MarkVmDown)[0].exit == ExitReason.ADMIN
    assert not of(out, c.StartVm) and "HA_VM_NOT_RESTARTED" in types(out)


def test_requests_about_unknown_things_are_refused():
    """Admin requests naming no known host or VM are refused with the name."""
    manager = cluster()
    for request in (manager.request_maintenance, manager.activate):
        with pytest.raises(RequestRefused, match="no host 'h9'"):
            request(0.0, "h9")
    for request in (manager.start_vm, manager.stop_vm):
        with pytest.raises(RequestRefused, match="no VM 'v9'"):
            request(0.0, "v9")


def test_a_user_start_is_placed_by_the_scheduler_or_refused_with_reasons():
    """A user's start goes to the host the scheduler picks; one that fits nowhere is refused
    with each host's reason; starting a running VM is refused."""
    manager = cluster(vm("small", memory_mib=512), vm("huge", memory_mib=9000))
    manager.start_vm(1.0, "small")
    out = manager.tick(1.0)
    [start] = of(out, c.StartVm)
    assert start.host == "h1" and types(out) == ["VM_PLACED"]
    manager.start_vm(1.0, "huge")
    refused = manager.tick(1.0)
    assert types(refused) == ["VM_START_REFUSED"] and "refused by memory" in refused[0].message
    with pytest.raises(RequestRefused, match="only a Down VM"):
        manager.start_vm(2.0, "small")


# -- the store and restarts --------------------------------------------------------------------


def test_the_snapshot_round_trips():
    """What the manager would store rebuilds a manager that stores the same."""
    manager = cluster(vm("web", "h2"), vm("db", "h1", ha=False), vm("off"))
    lose(manager, "h2")
    manager.request_maintenance(20.0, "h1")
    manager.tick(20.0)
    stored = manager.snapshot()
    assert {v.id: v.status for v in stored.vms}["web"] == "Unknown"
    assert stored.jobs and stored.jobs[0].kind == "migrate"
    again = ClusterManager.from_snapshot(30.0, stored, manager.state.settings)
    assert again.snapshot() == stored


def test_a_restarted_manager_resumes_what_the_store_says():
    """From the store: an HA VM Down with an error is restarted, a VM Unknown stays Unknown,
    a running job holds its reservation, a host PreparingForMaintenance resumes once its agent
    connects, fencing waits its startup delay, and one event says what was resumed."""
    vms = (
        vm("crashed", status=VmStatus.DOWN, exit="crashed"),
        vm("quiet", status=VmStatus.DOWN, exit="user"),
        vm("lost", "h3", status=VmStatus.UNKNOWN),
        vm("coming", "h1", status=VmStatus.WAIT_FOR_LAUNCH, memory_mib=3700),
        vm("evac", "h2", ha=False),
    )
    manager = cluster(
        *vms,
        hosts=("h1", "h2", "h3", "h4"),
        restarted=True,
        now=100.0,
        jobs=[StoredJob("start", "coming", "h1")],
        statuses={"h2": "PreparingForMaintenance", "h3": "NonResponsive"},
    )
    manager.observe(100.0, [f.HostSeen(h, HostEvent.CONNECTED) for h in ("h1", "h2", "h4")])
    out = manager.tick(100.0)
    assert types(out)[:2] == ["HA_VM_RESTART_QUEUED", "HA_STATE_RESUMED"]
    assert "1 VMs Unknown, 1 HA VMs to restart, 1 jobs in flight" in out[1].message
    [start] = of(out, c.StartVm)
    assert (start.vm, start.host) == ("crashed", "h4")  # h1's memory is reserved for "coming"
    [move] = of(out, c.MigrateVm)
    assert (move.vm, move.src, move.dst) == ("evac", "h2", "h4")
    assert not of(out, c.FenceHost)
    assert manager.state.hosts["h2"].maintenance is not None
    settle = manager.tick(100.0 + manager.state.settings.startup_fence_delay)
    assert [x.method for x in of(settle, c.FenceHost)] == ["soft"]


def test_settings_take_host_timing_names_and_check_values():
    """Settings accept their own names and the host timing's; wrong names, types or ranges
    are refused with the reason."""
    settings = HaSettings.from_mapping({"grace_period": 9, "storm_guard": False})
    assert settings.timing.grace_period == 9.0 and not settings.storm_guard
    assert settings.timing.heartbeat_interval == HA_TIMING.heartbeat_interval
    for bad, message in (
        ({"grace": 1}, "unknown setting"),
        ({"misses_to_suspect": 1.5}, "whole number"),
        ({"max_reruns": "3"}, "must be a number"),
        ({"storm_threshold_percent": 0}, "within 1..100"),
        ({"fence_quiet_time": -1}, "non-negative"),
        ({"max_starts_per_host": 0}, "at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            HaSettings.from_mapping(bad)


# -- extension points --------------------------------------------------------------------------


def test_a_planner_is_asked_only_when_the_cluster_is_calm_and_its_moves_are_checked():
    """The balancing planner sees every host and running VM when nothing else is going on;
    a move the scheduler accepts becomes a migration with its event, one it refuses an event;
    while HA has work, the planner is not asked."""
    asked = []

    def planner(seen):
        asked.append(seen)
        return [PlannedMove("a", "h2", "h1 is busy"), PlannedMove("big", "h3", "why not")]

    vms = (vm("a", "h1"), vm("big", "h1", memory_mib=3000), vm("full", "h3", memory_mib=3500))
    snapshot = cluster(*vms).snapshot()
    manager = ClusterManager.from_snapshot(0.0, snapshot, planner=planner, restarted=False)
    out = manager.tick(1.0)
    assert [h.id for h in asked[0].hosts] == ["h1", "h2", "h3"]
    assert {(r.id, host) for r, host in asked[0].placements} >= {("a", "h1"), ("big", "h1")}
    [move] = of(out, c.MigrateVm)
    assert (move.vm, move.src, move.dst) == ("a", "h1", "h2")
    assert types(out) == ["BALANCE_MIGRATION", "VM_MIGRATION_REFUSED"]
    asked.clear()
    manager.tick(2.0)  # a migration is in flight: not calm
    assert asked == []


def test_requests_are_decorated_with_the_placement():
    """The request decorator (affinity's hook) sees every scheduling request, where the running
    VMs are, and which hosts are being evacuated."""
    seen = []

    def decorate(request, placement, leaving):
        seen.append((request.id, dict(placement), leaving))
        return request

    snapshot = cluster(vm("a", "h1"), vm("b", "h2")).snapshot()
    manager = ClusterManager.from_snapshot(0.0, snapshot, decorate=decorate, restarted=False)
    manager.request_maintenance(1.0, "h1")
    manager.tick(1.0)
    assert seen[0] == ("a", {"a": "h1", "b": "h2"}, frozenset({"h1"}))
