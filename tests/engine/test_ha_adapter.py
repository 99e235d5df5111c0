"""Pure: the cluster manager's adapter (engine/clusterfacts.py) and its configuration.

Rows and observations become the manager's snapshot and facts; its commands become rows and
audit events, written only when they change something; ``[ha]`` settings reach the manager.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from engine import clusterfacts as cf
from engine.config import ConfigError, EngineConfig, check, read_ini
from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.clusterstate import HA_TIMING, DeadlineAction, ExitReason
from engine.decide.hoststate import HostEvent
from engine.decide.reconcile import VmReport
from engine.fence.result import FenceAction
from engine.store.rows import (
    Host,
    HostDynamic,
    HostPowerManagement,
    HostStatic,
    HostStatus,
    Job,
    JobStatus,
    Vm,
    VmDynamic,
    VmStatic,
    VmStatus,
)

H1, H2 = uuid.uuid4(), uuid.uuid4()


def vm(status=VmStatus.UP, host=H1, **dynamic) -> Vm:
    vm_id = uuid.uuid4()
    static = VmStatic(id=vm_id, name="web", mem_mib=512, vcpus=2, ha=True, ha_priority=40)
    return Vm(static, VmDynamic(vm_id, status, run_on_host=host, **dynamic))


def job(status: JobStatus, result=None, error=None) -> Job:
    now = datetime.now(UTC)
    return Job(uuid.uuid4(), "fence_reboot", "host", H1, status, 100, result, error, None, now,
               now)  # fmt: skip


@pytest.mark.parametrize(
    ("exit_status", "reason", "expected"),
    [
        ("normal", "0", ExitReason.USER),  # the guest powered itself off
        ("normal", "7", ExitReason.USER),
        ("normal", "6", ExitReason.ADMIN),
        ("normal", "4", ExitReason.MIGRATED),
        ("error", "2", ExitReason.CRASHED),  # lost its QEMU
        ("error", "3", ExitReason.START_FAILED),
        ("error", "99", ExitReason.CRASHED),  # unknown to us: an error all the same
        ("error", "host_fenced", ExitReason.HOST_FENCED),  # a row the manager wrote
        ("error", None, ExitReason.CRASHED),
        (None, None, None),  # never ran
    ],
)
def test_exit_reasons(exit_status, reason, expected):
    """VDSM's exit reasons, and the manager's own words, mean what HA needs."""
    assert cf.exit_reason(exit_status, reason) == expected


def test_rows_become_the_snapshot():
    """A host's sizes and power management, and a VM's status, host and exit, are what the
    manager is rebuilt from; external VMs are never HA."""
    host = Host(HostStatic(H1, "h1", "127.0.0.1"),
                HostDynamic(H1, HostStatus.NON_RESPONSIVE, cpu_count=8, mem_total_mib=16384,
                            capabilities={"reservedMem": "512"}))  # fmt: skip
    power = HostPowerManagement(H1, enabled=True, driver="process", fencing_enabled=False)
    down = vm(VmStatus.DOWN, None, exit_status="error", exit_reason="host_fenced")
    external = vm(external=True)
    snap = cf.snapshot([host], [down, external], {H1: power})
    [stored] = snap.hosts
    assert (stored.status, stored.cpus, stored.memory_mib) == ("NonResponsive", 8, 16384)
    assert stored.power_management and not stored.fencing_enabled
    first, second = snap.vms
    assert (first.status, first.host, first.exit, first.ha) == ("Down", None, "host_fenced", True)
    assert (second.host, second.ha) == (str(H1), False)
    bare = cf.stored_host(host)
    assert not bare.power_management and bare.fencing_enabled


def test_reports_become_facts():
    """A Down report carries its exit reason for HA; a host's list is the reconciled rows."""
    report = VmReport("v1", VmStatus.DOWN, 5, exit_code=1, exit_reason=2, exit_message="boom")
    assert cf.vm_seen(H1, report) == f.VmSeen(str(H1), "v1", VmStatus.DOWN, "crashed", "boom")
    up = VmReport("v2", VmStatus.UP, 5)
    assert cf.vm_seen(H1, up) == f.VmSeen(str(H1), "v2", VmStatus.UP, None, "")
    running = vm()
    assert cf.host_vms(H1, [running]).vms == {str(running.id): VmStatus.UP}
    assert cf.host_seen(H1, HostEvent.LINK_LOST, "gone") == f.HostSeen(str(H1), "link_lost",
                                                                         "gone")  # fmt: skip


def test_fence_outcomes():
    """A soft fence done is "restarted", a power fence done is "fenced"; a failed job is
    "failed", unless its fence result was unknown; no job at all failed."""
    assert cf.fence_action(c.FenceHost(str(H1), c.SOFT, "r")) == (FenceAction.RESTART, "soft")
    assert cf.fence_action(c.FenceHost(str(H1), c.POWER, "r")) == (FenceAction.REBOOT, "power")
    off = c.FenceHost(str(H1), c.POWER, "r", power_on_after=False)
    assert cf.fence_action(off) == (FenceAction.OFF, "power")
    done = job(JobStatus.SUCCEEDED, {"proof": "cgroup empty"})
    assert cf.fence_done(H1, c.POWER, done) == f.FenceDone(str(H1), "power", f.FENCED,
                                                          "cgroup empty")  # fmt: skip
    assert cf.fence_done(H1, c.SOFT, done).result == f.RESTARTED
    unknown = job(JobStatus.FAILED, error="off of host h1: unknown: no answer (proof: none)")
    assert cf.fence_done(H1, c.POWER, unknown).result == f.STATUS_UNKNOWN
    failed = job(JobStatus.FAILED, error="off of host h1: failed: refused (proof: none)")
    assert cf.fence_done(H1, c.POWER, failed).result == f.FAILED
    assert cf.fence_done(H1, c.POWER, None, "busy").detail == "busy"


def test_marks_are_written_only_when_they_change_the_row():
    """MarkVmDown / MarkVmUnknown give a row unless the row says so already, or says the VM
    runs on another host (a newer report moved it)."""
    running = vm()
    down = cf.down_row(running, c.MarkVmDown(str(running.id), str(H1), "host_fenced", "fenced"))
    assert down is not None and down.status is VmStatus.DOWN
    assert (down.exit_status, down.exit_reason, down.exit_message) == ("error", "host_fenced",
                                                                       "fenced")  # fmt: skip
    admin = cf.down_row(running, c.MarkVmDown(str(running.id), str(H1), "admin", "stopped"))
    assert admin is not None and admin.exit_status == "normal"
    elsewhere = c.MarkVmDown(str(running.id), str(H2), "lost", "x")
    assert cf.down_row(running, elsewhere) is None
    assert cf.down_row(vm(VmStatus.DOWN, None), elsewhere) is None
    unknown = cf.unknown_row(running, c.MarkVmUnknown(str(running.id), str(H1), "silent"))
    assert unknown is not None and unknown.run_on_host == H1
    assert cf.unknown_row(vm(VmStatus.UNKNOWN), c.MarkVmUnknown("x", str(H1), "")) is None


def test_commands_are_paired_with_the_events_that_explain_them():
    """A row command takes the event right after it about the same subject; events the shell
    records itself are left out."""
    status = c.SetHostStatus("h", "Down", "power confirmed off")
    host_down = c.Event("HOST_DOWN", "warning", "Host h is down", host="h")
    mark = c.MarkVmDown("v", "h", "host_fenced", "fenced")
    vm_down = c.Event("VM_DOWN_ERROR", "error", "VM v is down", vm="v")
    queued = c.Event("HA_VM_RESTART_QUEUED", "normal", "...", vm="v")
    started = c.Event("VM_STARTED", "normal", "...", vm="v")
    paired = cf.paired([status, host_down, mark, vm_down, queued, started])
    assert paired == [(status, host_down), (mark, vm_down), (queued, None)]
    audit = cf.audit(c.Event("HOST_FENCED", "warning", "m", host=str(H1), details={"p": 1}))
    assert (audit.type, audit.host_id, audit.details) == ("HOST_FENCED", H1, {"p": 1})


def test_ha_configuration():
    """[ha] sets the manager's knobs and the liveness budget; the defaults are HA_TIMING; a
    setting given in [ha] and [monitoring] both, an unknown one or a bad value is refused."""
    default = EngineConfig()
    assert default.ha_settings.timing.heartbeat_timeout == HA_TIMING.heartbeat_timeout
    assert default.ha_settings.timing.grace_period == HA_TIMING.grace_period
    assert default.ha_settings.start_timeout == default.start_timeout + 30
    config = check(read_ini("[ha]\ngrace_period = 7\nstorm_threshold_percent = 30\n"
                            "on_maintenance_deadline = stay\nfencing_enabled = no\n"
                            "move_back = yes\ntick_interval = 0.5\n"))  # fmt: skip
    settings = config.ha_settings
    assert settings.timing.grace_period == 7 and settings.storm_threshold_percent == 30
    assert settings.on_maintenance_deadline is DeadlineAction.STAY
    assert not settings.fencing_enabled
    assert config.ha_move_back and config.ha_tick_interval == 0.5
    for text, word in (("[ha]\ncolour = red\n", "colour"),
                       ("[ha]\nmax_reruns = many\n", "max_reruns"),
                       ("[ha]\ngrace_period = 3\n[monitoring]\ngrace_period = 4\n", "once"),
                       ("[ha]\nfencing_enabled = perhaps\n", "fencing_enabled")):  # fmt: skip
        with pytest.raises(ConfigError, match=word):
            read_ini(text)
    for text, word in (
        ("[ha]\nstorm_threshold_percent = 300\n", "storm_threshold"),
        ("[ha]\non_maintenance_deadline = never\n", "on_maintenance_deadline"),
    ):
        with pytest.raises(ConfigError, match=word):
            check(read_ini(text))
