"""Tests of the cluster manager's maintenance: evacuation within limits, what cannot move, the
deadline, move-back, and maintenance of a host that does not answer."""

from __future__ import annotations

import pytest
from test_cluster_manager import GRACE, answer, cluster, lose, of, types, vm

from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.cluster import RequestRefused
from engine.store.rows import VmStatus


def migrated(manager, move, now):
    """``move`` finished well at ``now``; :returns: the tick's commands."""
    manager.observe(now, [f.JobDone("migrate", move.vm, move.dst, True)])
    return manager.tick(now)


def moves(commands):
    """(vm, src, dst) of every MigrateVm."""
    return [(m.vm, m.src, m.dst) for m in of(commands, c.MigrateVm)]


def test_evacuation_goes_by_priority_spread_and_within_limits():
    """VMs leave by priority, at most two at once, spread by the scheduler over the other
    hosts; the host is in Maintenance once the last one has left."""
    vms = tuple(vm(f"v{p}", "h1", priority=p, ha=False) for p in (10, 40, 30, 20))
    manager = cluster(*vms, memory=8192)
    manager.request_maintenance(1.0, "h1")
    out = manager.tick(1.0)
    assert types(out)[0] == "HOST_MAINTENANCE_STARTED"
    assert moves(out) == [("v40", "h1", "h2"), ("v30", "h1", "h3")]
    assert "host h2 chosen by the scheduler" in of(out, c.MigrateVm)[0].reason
    assert not of(manager.tick(2.0), c.MigrateVm)
    out = migrated(manager, of(out, c.MigrateVm)[0], 4.0)
    assert [m[0] for m in moves(out)] == ["v20"]
    now = 5.0
    while manager.snapshot().jobs:
        for job in manager.snapshot().jobs:
            out = migrated(manager, c.MigrateVm(job.vm, "h1", job.host, ""), now)
        now += 1
    assert [s.status for s in of(out, c.SetHostStatus)] == ["Maintenance"]
    assert {v.host for v in manager.state.vms.values()} == {"h2", "h3"}


def test_incoming_migrations_are_limited_per_destination():
    """With one other host and the default limits, no more than two migrations go to it."""
    vms = tuple(vm(f"v{i}", "h1", ha=False) for i in range(4))
    manager = cluster(*vms, hosts=("h1", "h2"), max_migrations_out=4)
    manager.request_maintenance(1.0, "h1")
    assert len(moves(manager.tick(1.0))) == 2


def test_a_pinned_vm_is_reported_once_and_the_host_waits_for_it():
    """A VM pinned to the host cannot move: one event with the reason (not one per retry); the
    host enters Maintenance once the user stops it."""
    manager = cluster(vm("lic", "h1", pinned_host="h1"))
    manager.request_maintenance(1.0, "h1")
    out = manager.tick(1.0)
    for now in range(2, 60):
        out += manager.tick(float(now))
    [cannot] = [e for e in out if getattr(e, "type", "") == "MAINTENANCE_VM_CANNOT_MOVE"]
    assert "pinned to this host" in cannot.message
    manager.stop_vm(60.0, "lic")
    manager.tick(60.0)
    manager.observe(61.0, [f.VmSeen("h1", "lic", VmStatus.DOWN, "admin")])
    assert [s.status for s in of(manager.tick(61.0), c.SetHostStatus)] == ["Maintenance"]


@pytest.mark.parametrize(("action", "status"), [("activate", "Up"), ("stay", None)])
def test_the_deadline_reports_what_could_not_move(action, status):
    """At the deadline, one error event lists every VM left and why; with ``activate`` the host
    goes back Up, with ``stay`` it keeps PreparingForMaintenance."""
    vms = (vm("a", "h1", memory_mib=3000), vm("b", "h1", memory_mib=3000))
    manager = cluster(
        *vms, hosts=("h1", "h2"), maintenance_deadline=60, on_maintenance_deadline=action
    )
    manager.request_maintenance(0.0, "h1")
    out = manager.tick(0.0)
    migrated(manager, of(out, c.MigrateVm)[0], 3.0)
    for now in range(4, 60):
        manager.tick(float(now))
    out = manager.tick(60.0)
    [report] = [e for e in out if getattr(e, "type", "") == "MAINTENANCE_DEADLINE_EXCEEDED"]
    assert report.severity == "error"
    assert (
        "not emptied within 60 s: 1 VM(s) left (b: no host can take it (h2: refused by memory"
        in report.message
    )
    assert [s.status for s in of(out, c.SetHostStatus)] == ([status] if status else [])
    expected = "Up" if status else "PreparingForMaintenance"
    assert manager.state.hosts["h1"].state == expected


def test_move_back_after_activation():
    """With move-back, the VMs that left return to the host once it is activated and Up."""
    manager = cluster(vm("a", "h1", ha=False), vm("b", "h1", ha=False))
    manager.request_maintenance(0.0, "h1", move_back=True)
    out = manager.tick(0.0)
    for move in of(out, c.MigrateVm):
        out = migrated(manager, move, 3.0)
    assert manager.state.hosts["h1"].state == "Maintenance"
    manager.activate(10.0, "h1")
    out = manager.tick(10.0)
    assert types(out)[0] == "HOST_ACTIVATED"
    assert sorted(moves(out)) == [("a", "h2", "h1"), ("b", "h3", "h1")]
    assert types(out).count("MAINTENANCE_MOVE_BACK") == 2


def test_move_back_is_refused_when_the_host_cannot_take_the_vm():
    """A VM whose way back the scheduler refuses stays where it is, with the reason."""
    manager = cluster(vm("a", "h1", ha=False, memory_mib=3000), hosts=("h1", "h2"))
    manager.request_maintenance(0.0, "h1", move_back=True)
    migrated(manager, of(manager.tick(0.0), c.MigrateVm)[0], 3.0)
    manager.state.hosts["h1"].reserved_mib = 2000  # the host came back with less room
    manager.activate(10.0, "h1")
    out = manager.tick(10.0)
    assert not of(out, c.MigrateVm)
    assert (
        "refused by memory" in out[-1].message and out[-1].type == "MAINTENANCE_MOVE_BACK_REFUSED"
    )


def test_a_failed_migration_is_tried_again_later():
    """A migration that fails leaves the VM on its host, is an event, and is retried after
    evacuation_retry seconds."""
    manager = cluster(vm("busy", "h1", ha=False), evacuation_retry=10)
    manager.request_maintenance(0.0, "h1")
    [move] = of(manager.tick(0.0), c.MigrateVm)
    manager.observe(3.0, [f.JobDone("migrate", "busy", move.dst, False, "did not converge")])
    out = manager.tick(3.0)
    assert types(out) == ["VM_MIGRATION_FAILED"] and manager.state.vms["busy"].status is VmStatus.UP
    assert not of(manager.tick(12.0), c.MigrateVm)
    assert of(manager.tick(13.0), c.MigrateVm)


def test_a_nonresponsive_host_goes_to_maintenance_and_is_still_fenced():
    """Maintenance of a NonResponsive host is immediate; its Unknown VMs still need the proof,
    so fencing goes on."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.request_maintenance(20.0, "h2")
    out = manager.tick(20.0)
    assert [s.status for s in of(out, c.SetHostStatus)] == ["Maintenance"]
    assert manager.state.vms["web"].status is VmStatus.UNKNOWN


def test_maintenance_of_a_connecting_host_with_vms_is_refused():
    """A host in its grace period holding VMs can be neither evacuated nor declared empty: the
    request is refused with the reason; activating a NonResponsive host is refused too."""
    manager = cluster(vm("web", "h2"))
    manager.observe(10.0, [f.HostSeen("h2", "link_lost")])
    manager.tick(10.0)
    with pytest.raises(RequestRefused, match="Connecting"):
        manager.request_maintenance(11.0, "h2")
    manager.tick(10.0 + GRACE)
    with pytest.raises(RequestRefused, match="becomes Up by itself"):
        manager.activate(16.0, "h2")


def test_a_host_that_dies_while_preparing_is_restarted_and_then_in_maintenance():
    """A host that goes silent during its evacuation stops migrating, goes NonResponsive, is
    fenced like any other; once proven off it is in Maintenance, as asked."""
    manager = cluster(vm("a", "h1"), vm("b", "h1"), max_migrations_out=1)
    manager.request_maintenance(0.0, "h1")
    manager.tick(0.0)
    manager.observe(1.0, [f.HostSeen("h1", "heartbeat_missed")])
    assert not of(manager.tick(2.0), c.MigrateVm)
    out = manager.tick(1.0 + GRACE)
    assert [s.status for s in of(out, c.SetHostStatus)] == ["NonResponsive"]
    manager.observe(8.0, [f.PowerSeen("h1", f.POWER_OFF)])
    out = manager.tick(8.0)
    assert [s.status for s in of(out, c.SetHostStatus)] == ["Down", "Maintenance"]
    assert of(out, c.StartVm)


def test_a_host_answering_again_resumes_its_maintenance():
    """A host that was NonResponsive while preparing and answers again goes back to
    PreparingForMaintenance, since the admin still wants it."""
    manager = cluster(vm("a", "h1", ha=False), max_migrations_out=1, hosts=("h1",))
    manager.request_maintenance(0.0, "h1")
    manager.tick(0.0)
    lose(manager, "h1", now=1.0)
    out = answer(manager, "h1", 20.0, "a")
    assert [s.status for s in of(out, c.SetHostStatus)] == ["Up", "PreparingForMaintenance"]
