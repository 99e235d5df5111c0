"""Tests of the cluster manager's fencing: the ladder (power status and soft fence, then power
fence), its proofs, its failures and quiet time, the storm guard and the startup delay."""

from __future__ import annotations

from test_cluster_manager import GRACE, cluster, fence_off, lose, of, types, vm

from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.clusterstate import ExitReason
from engine.store.rows import VmStatus

NR = 10.0 + GRACE  # when a host that lost its link at 10 s is declared NonResponsive


def test_a_round_asks_the_power_status_and_soft_fences_at_once():
    """A NonResponsive host holding VMs gets a power status query and a soft fence in the same
    tick, explained by one event naming its Unknown VMs."""
    manager = cluster(vm("web", "h2"))
    out = lose(manager, "h2")
    [query] = of(out, c.ConfirmPowerStatus)
    [soft] = of(out, c.FenceHost)
    assert (query.host, soft.host, soft.method) == ("h2", "h2", c.SOFT)
    [started] = [e for e in out if isinstance(e, c.Event) and e.type == "HOST_FENCE_STARTED"]
    assert "1 VM(s) in Unknown: web" in started.message and "power status" in started.message


def test_a_host_without_vms_is_not_fenced():
    """With nothing to prove, a NonResponsive host is left alone: it returns when it answers."""
    manager = cluster(vm("web", "h1"))
    out = lose(manager, "h2")
    for now in range(int(NR), int(NR) + 60):
        out += manager.tick(float(now))
    assert not of(out, c.FenceHost) and not of(out, c.ConfirmPowerStatus)


def test_power_found_off_is_the_proof():
    """A power status of "off" proves the host dead: it is Down, its VMs are Down (an HA one is
    restarted on another host), and later fence answers change nothing."""
    manager = cluster(vm("web", "h2"), vm("tmp", "h2", ha=False))
    lose(manager, "h2")
    out = fence_off(manager, "h2", NR + 1)
    assert [s.status for s in of(out, c.SetHostStatus)] == ["Down"]
    assert {(d.vm, d.exit) for d in of(out, c.MarkVmDown)} == {
        ("web", ExitReason.HOST_FENCED),
        ("tmp", ExitReason.HOST_FENCED),
    }
    [start] = of(out, c.StartVm)
    assert start.vm == "web" and start.host != "h2"
    assert types(out)[:2] == ["HOST_FENCED", "HOST_DOWN"]
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED, "timed out")])
    assert not of(manager.tick(NR + 2), c.FenceHost)


def test_soft_fence_failure_leads_to_power_fencing_whose_ack_is_the_proof():
    """Power on and soft fencing failed: the host is power-fenced (and switched on again after);
    its confirmation marks the VMs Down and restarts the HA one elsewhere."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.observe(NR + 1, [f.PowerSeen("h2", f.POWER_ON)])
    assert types(manager.tick(NR + 1)) == ["HOST_POWER_STATUS"]
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED, "timed out")])
    out = manager.tick(NR + 2)
    [power] = of(out, c.FenceHost)
    assert power.method == c.POWER and power.power_on_after
    assert "power management last said: on" in power.reason
    assert not of(out, c.StartVm)
    manager.observe(NR + 4, [f.FenceDone("h2", c.POWER, f.FENCED, "chassis off")])
    out = manager.tick(NR + 4)
    assert of(out, c.MarkVmDown)[0].exit == ExitReason.HOST_FENCED
    assert of(out, c.StartVm)[0].vm == "web"


def test_an_agent_restarted_by_soft_fencing_that_answers_ends_the_round():
    """The agent was restarted and the host answers within the wait, listing its VM: fencing
    ends as a success and nothing is restarted or power-fenced."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.RESTARTED, "agent restarted")])
    assert types(manager.tick(NR + 2)) == ["HOST_FENCE_SOFT_RESTARTED"]
    manager.observe(
        NR + 3,
        [f.HostSeen("h2", "connected"), f.HostVms("h2", {"web": VmStatus.UP})],
    )
    out = manager.tick(NR + 3)
    assert "HOST_FENCE_SOFT_SUCCEEDED" in types(out)
    out += manager.tick(NR + 30)
    assert not of(out, c.FenceHost) and not of(out, c.StartVm)
    assert manager.state.vms["web"].status is VmStatus.UP


def test_an_agent_restarted_that_stays_silent_is_power_fenced():
    """The agent was restarted but the host does not answer within the wait: power fencing."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.RESTARTED)])
    manager.tick(NR + 2)
    wait = manager.state.settings.soft_fence_return_wait
    assert not of(manager.tick(NR + 2 + wait - 1), c.FenceHost)
    out = manager.tick(NR + 2 + wait)
    assert [x.method for x in of(out, c.FenceHost)] == [c.POWER]
    assert "did not answer within" in out[0].message


def test_a_soft_fence_without_outcome_times_out():
    """A soft fence that never reports counts as failed after its timeout."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    timeout = manager.state.settings.soft_fence_timeout
    out = manager.tick(NR + timeout)
    assert [x.method for x in of(out, c.FenceHost)] == [c.POWER]


def test_failed_power_fencing_alerts_and_retries_after_the_quiet_time():
    """Power fencing fails: an alert, the VM stays Unknown, nothing happens during the quiet
    time, then a new round (numbered) starts."""
    manager = cluster(vm("web", "h2"), fence_quiet_time=30)
    lose(manager, "h2")
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED)])
    manager.tick(NR + 2)
    manager.observe(NR + 4, [f.FenceDone("h2", c.POWER, f.FAILED, "no route to BMC")])
    out = manager.tick(NR + 4)
    assert types(out) == ["HOST_FENCE_POWER_FAILED"] and out[0].severity == "alert"
    assert "no route to BMC" in out[0].message and "next round in 30 s" in out[0].message
    for now in range(int(NR) + 5, int(NR) + 34):
        assert not of(manager.tick(float(now)), c.FenceHost)
    again = manager.tick(NR + 34)
    assert [x.method for x in of(again, c.FenceHost)] == [c.SOFT]
    assert "round 2" in again[-1].message
    assert manager.state.vms["web"].status is VmStatus.UNKNOWN


def test_an_unknown_fence_result_proves_nothing():
    """Power fencing whose device cannot tell the power status leaves the VM Unknown: no
    restart, an alert."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.observe(NR + 1, [f.PowerSeen("h2", f.POWER_UNKNOWN, "no answer")])
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED)])
    manager.tick(NR + 2)
    manager.observe(NR + 4, [f.FenceDone("h2", c.POWER, f.STATUS_UNKNOWN, "cannot tell")])
    out = manager.tick(NR + 4)
    assert types(out) == ["HOST_FENCE_STATUS_UNKNOWN"]
    assert not of(out, c.StartVm) and not of(out, c.MarkVmDown)


def test_a_power_fence_that_never_reports_is_unknown():
    """A power fence with no outcome within its timeout counts as unknown, not as fenced."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED)])
    manager.tick(NR + 2)
    out = manager.tick(NR + 2 + manager.state.settings.power_timeout)
    assert types(out) == ["HOST_FENCE_STATUS_UNKNOWN"] and not of(out, c.StartVm)


def test_without_power_management_only_soft_fencing_is_tried():
    """A host without power management gets no power query and no power fence; when soft
    fencing fails, an alert says its VMs stay Unknown."""
    manager = cluster(vm("web", "h2"), pm=False)
    out = lose(manager, "h2")
    assert not of(out, c.ConfirmPowerStatus)
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED, "timed out")])
    out = manager.tick(NR + 2)
    assert types(out) == ["HOST_FENCE_SOFT_FAILED", "HOST_FENCE_NO_POWER_MANAGEMENT"]
    assert not of(out, c.FenceHost)


def test_a_fencing_storm_fences_nobody_and_alerts_once():
    """Three of four hosts unreachable: one alert, no fence command however long it lasts;
    when two come back the guard lifts with an event and the last one is fenced."""
    vms = (vm("a", "h2"), vm("b", "h3"), vm("c", "h4"))
    manager = cluster(*vms, hosts=("h1", "h2", "h3", "h4"))
    manager.observe(10.0, [f.HostSeen(h, "link_lost") for h in ("h2", "h3", "h4")])
    out = []
    for now in range(10, 60):
        out += manager.tick(float(now))
    [alert] = [e for e in out if isinstance(e, c.Event) and e.type == "FENCING_SKIPPED_STORM"]
    assert "3 of 4 hosts are unreachable (h2, h3, h4" in alert.message
    assert not of(out, c.FenceHost) and not of(out, c.ConfirmPowerStatus)
    for host, vm_id in (("h3", "b"), ("h4", "c")):
        manager.observe(60.0, [f.HostSeen(host, "connected"), f.HostVms(host, {vm_id: "Up"})])
    out = manager.tick(60.0)
    assert "FENCING_RESUMED" in types(out)
    assert [(x.host, x.method) for x in of(out, c.FenceHost)] == [("h2", c.SOFT)]


def test_one_silent_host_of_two_is_no_storm():
    """A storm takes at least two unreachable hosts: in a two-host cluster, the silent one is
    fenced even though it is half of the cluster."""
    manager = cluster(vm("web", "h2"), hosts=("h1", "h2"))
    assert of(lose(manager, "h2"), c.FenceHost)


def test_the_storm_guard_can_be_switched_off():
    """With the guard off, a majority of silent hosts is fenced like any other."""
    vms = (vm("a", "h2"), vm("b", "h3"))
    manager = cluster(*vms, hosts=("h1", "h2", "h3"), storm_guard=False)
    manager.observe(10.0, [f.HostSeen(h, "link_lost") for h in ("h2", "h3")])
    manager.tick(10.0)
    out = manager.tick(NR)
    assert sorted(x.host for x in of(out, c.FenceHost)) == ["h2", "h3"]


def test_disabled_fencing_alerts_once_and_never_fences():
    """With fencing disabled, one alert per host says its VMs stay Unknown."""
    manager = cluster(vm("web", "h2"), fencing_enabled=False)
    out = lose(manager, "h2")
    for now in range(int(NR) + 1, int(NR) + 30):
        out += manager.tick(float(now))
    assert types(out).count("HOST_FENCE_DISABLED") == 1 and not of(out, c.FenceHost)


def test_no_fencing_right_after_an_engine_restart():
    """A host stored NonResponsive is not fenced before the startup delay has passed (its link
    may simply not have connected yet); one event says until when."""
    manager = cluster(
        vm("web", "h2", status=VmStatus.UNKNOWN),
        now=100.0,
        restarted=True,
        statuses={"h2": "NonResponsive"},
    )
    delay = manager.state.settings.startup_fence_delay
    manager.observe(100.0, [f.HostSeen(h, "connected") for h in ("h1", "h3")])
    out = manager.tick(100.0)
    assert "FENCING_DELAYED_STARTUP" in types(out) and not of(out, c.FenceHost)
    assert of(manager.tick(100.0 + delay), c.FenceHost)


def test_a_host_fenced_during_maintenance_is_left_off():
    """A host the admin put in maintenance is power-fenced without being switched on again, and
    is in Maintenance once fenced."""
    manager = cluster(vm("web", "h2"))
    lose(manager, "h2")
    manager.request_maintenance(NR + 1, "h2")
    manager.observe(NR + 2, [f.FenceDone("h2", c.SOFT, f.FAILED)])
    [power] = of(manager.tick(NR + 2), c.FenceHost)
    assert power.method == c.POWER and not power.power_on_after
    manager.observe(NR + 4, [f.FenceDone("h2", c.POWER, f.FENCED)])
    out = manager.tick(NR + 4)
    assert [s.status for s in of(out, c.SetHostStatus)] == ["Down", "Maintenance"]
    assert of(out, c.StartVm)
