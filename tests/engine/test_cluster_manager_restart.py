"""Tests of the cluster manager's HA restarts: which VMs, in which order, where, how often,
and within which limits."""

from __future__ import annotations

from test_cluster_manager import GRACE, cluster, fence_off, lose, of, types, vm

from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.clusterstate import ExitReason
from engine.store.rows import VmStatus

NR = 10.0 + GRACE
PROOF = NR + 1


def fenced(manager, host="h2"):
    """Make ``host`` NonResponsive, then proven off; :returns: the commands at the proof."""
    lose(manager, host)
    return fence_off(manager, host, PROOF)


def up(manager, host, vm_id, now):
    """``vm_id`` is reported Up on ``host``; :returns: the tick's commands."""
    manager.observe(now, [f.VmSeen(host, vm_id, VmStatus.UP)])
    return manager.tick(now)


def starts(commands):
    """(vm, host) of every StartVm."""
    return [(s.vm, s.host) for s in of(commands, c.StartVm)]


def test_higher_priorities_start_first_and_lower_ones_wait():
    """The VM of the highest priority starts first; equal priorities start together once it
    is Up; each waiting VM says, once, what it waits for."""
    vms = (
        vm("db", "h2", priority=90),
        vm("app1", "h2", priority=50),
        vm("app2", "h2", priority=50),
        vm("batch", "h2", priority=10),
    )
    manager = cluster(*vms)
    out = fenced(manager)
    assert [v for v, _ in starts(out)] == ["db"]
    assert types(out).count("HA_VM_RESTART_BLOCKED") == 3
    assert not of(manager.tick(PROOF + 1), c.StartVm)
    host = starts(out)[0][1]
    out = up(manager, host, "db", PROOF + 2)
    assert sorted(v for v, _ in starts(out)) == ["app1", "app2"]
    assert "HA_VM_RESTARTED" in types(out) and "HA_VM_RESTART_BLOCKED" not in types(out)


def test_a_lower_priority_waits_only_so_long():
    """A VM of higher priority that cannot start blocks the others for at most
    max_blocked_on_priority seconds."""
    vms = (vm("huge", "h2", priority=90, memory_mib=9000), vm("small", "h2", priority=10))
    manager = cluster(*vms, max_blocked_on_priority=20)
    out = fenced(manager)
    assert not of(out, c.StartVm) and "HA_VM_RESTART_RETRY" in types(out)
    for now in range(int(PROOF) + 1, int(PROOF) + 20):
        assert "small" not in dict(starts(manager.tick(float(now))))
    assert "small" in dict(starts(manager.tick(PROOF + 20)))


def test_refusals_are_retried_with_backoff_forever():
    """A VM no host can take is retried every short interval, then every long interval, each
    attempt an event with each host's reason."""
    vms = (vm("huge", "h2", memory_mib=9000),)
    manager = cluster(
        *vms, restart_short_tries=3, restart_short_interval=5, restart_long_interval=60
    )
    out = fenced(manager)
    times = [PROOF] if "HA_VM_RESTART_RETRY" in types(out) else []
    assert (
        "refused by memory"
        in [e for e in out if getattr(e, "type", "") == "HA_VM_RESTART_RETRY"][0].message
    )
    for now in range(int(PROOF) + 1, int(PROOF) + 200):
        if "HA_VM_RESTART_RETRY" in types(manager.tick(float(now))):
            times.append(float(now))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [5.0, 5.0, 60.0, 60.0, 60.0]


def test_a_host_coming_up_wakes_the_queue():
    """A VM waiting for its next try is tried at once when a host comes Up."""
    vms = (vm("big", "h2", memory_mib=3000), vm("filler", "h1", ha=False, memory_mib=3000))
    manager = cluster(*vms, hosts=("h1", "h2"), restart_short_interval=30)
    assert not of(fenced(manager), c.StartVm)
    manager.observe(PROOF + 3, [f.HostSeen("h2", "connected"), f.HostVms("h2", {})])
    assert starts(manager.tick(PROOF + 3)) == [("big", "h2")]


def test_a_failed_start_is_rerun_elsewhere_at_once_then_backs_off():
    """A start that fails is rerun at once on another host (the failed ones avoided); when
    max_reruns hosts failed, it backs off, and may use any host again."""
    manager = cluster(vm("web", "h2"), hosts=("h1", "h2", "h3", "h4"), max_reruns=2)
    first = starts(fenced(manager))[0][1]
    manager.observe(PROOF + 2, [f.JobDone("start", "web", first, False, "QEMU refused")])
    out = manager.tick(PROOF + 2)
    [(_, second)] = starts(out)
    assert second not in (first, "h2")
    assert (
        "start on host"
        in [e.message for e in out if getattr(e, "type", "") == "HA_VM_RESTART_RETRY"][0]
    )
    manager.observe(PROOF + 4, [f.JobDone("start", "web", second, False, "QEMU refused")])
    out = manager.tick(PROOF + 4)
    assert not of(out, c.StartVm) and "next attempt in 5 s" in out[-1].message
    assert manager.state.vms["web"].restart.avoid == frozenset()


def test_start_limits_make_vms_wait_for_a_slot_without_counting_attempts():
    """With one start per host at a time, the third VM waits for a slot (no attempt counted)
    and starts when one is free."""
    vms = tuple(vm(f"v{i}", "h2") for i in range(1, 4))
    manager = cluster(*vms, max_starts_per_host=1)
    out = fenced(manager)
    assert len(starts(out)) == 2 and types(out).count("HA_VM_RESTART_WAITING") == 1
    assert manager.state.vms["v3"].restart.attempts == 0
    [(first, host)] = starts(out)[:1]
    out = up(manager, host, first, PROOF + 2)
    assert starts(out) == [("v3", host)]


def test_only_errors_restart_and_only_ha_vms():
    """A crash restarts an HA VM (on its own healthy host if the scheduler likes it best); a
    guest shutdown does not; a non-HA VM that crashed stays Down with an event."""
    vms = (vm("crashy", "h1"), vm("quiet", "h1"), vm("plain", "h1", ha=False))
    manager = cluster(*vms, hosts=("h1",))
    manager.observe(
        5.0,
        [
            f.VmSeen("h1", "crashy", VmStatus.DOWN, ExitReason.CRASHED, "segfault"),
            f.VmSeen("h1", "quiet", VmStatus.DOWN, ExitReason.USER),
            f.VmSeen("h1", "plain", VmStatus.DOWN, ExitReason.CRASHED),
        ],
    )
    out = manager.tick(5.0)
    assert starts(out) == [("crashy", "h1")]
    messages = [e.message for e in out if getattr(e, "type", "") == "HA_VM_NOT_RESTARTED"]
    assert messages == [
        "VM quiet is not restarted: it was shut down from inside the guest, not lost",
        "VM plain is not restarted: it is not highly available",
    ]


def test_stopping_a_queued_vm_takes_it_out_of_the_queue():
    """The user stops an HA VM waiting for a restart: it leaves the queue for good."""
    manager = cluster(vm("huge", "h2", memory_mib=9000))
    fenced(manager)
    manager.stop_vm(PROOF + 1, "huge")
    out = manager.tick(PROOF + 1)
    assert types(out) == ["HA_VM_NOT_RESTARTED"]
    for now in range(int(PROOF) + 2, int(PROOF) + 100):
        assert not types(manager.tick(float(now)))


def test_a_start_without_outcome_times_out_and_is_retried():
    """A start that never reports fails after start_timeout and is rerun elsewhere."""
    manager = cluster(vm("web", "h2"), start_timeout=20)
    [(_, first)] = starts(fenced(manager))
    out = manager.tick(PROOF + 20)
    assert [d.exit for d in of(out, c.MarkVmDown)] == [ExitReason.START_FAILED]
    [(_, second)] = starts(out)
    assert second != first


def test_the_restart_event_gives_the_latency_from_the_first_trouble():
    """When the restarted VM is Up, an event says how long after its host's trouble began."""
    manager = cluster(vm("web", "h2"))
    [(_, host)] = starts(fenced(manager))
    out = up(manager, host, "web", PROOF + 2)
    [done] = [e for e in out if getattr(e, "type", "") == "HA_VM_RESTARTED"]
    assert done.message.endswith(f"{PROOF + 2 - 10.0:g} s after its trouble began")
    assert manager.state.vms["web"].restart is None


def test_a_failed_user_start_of_an_ha_vm_is_taken_over_by_ha():
    """An HA VM whose user start fails is queued for HA, avoiding the host that failed."""
    manager = cluster(vm("web"))
    manager.start_vm(1.0, "web")
    [(_, host)] = starts(manager.tick(1.0))
    manager.observe(3.0, [f.JobDone("start", "web", host, False, "no")])
    out = manager.tick(3.0)
    assert types(out)[:2] == ["VM_START_FAILED", "HA_VM_RESTART_QUEUED"]
    [(_, again)] = starts(out)
    assert again != host
