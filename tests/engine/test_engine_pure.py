"""The engine's pure parts: VM specs and ``VM.create`` params, reading agents' wire shapes,
reconciling a host's reports, the scheduler snapshot, and host transition events."""

from __future__ import annotations

import uuid

import pytest

from engine import domain, snapshot, wire
from engine.decide import hoststate
from engine.decide import reconcile as rc
from engine.decide.hoststate import HostEvent
from engine.monitoring import host_url, transition_event
from engine.store.errors import InvalidValue
from engine.store.rows import (
    Host,
    HostDynamic,
    HostStatic,
    HostStatistics,
    Vm,
    VmDynamic,
    VmStatic,
    VmStatus,
)
from vdsmlike.api.schema import Schema
from vdsmlike.vm.domxml import build_domain

S = VmStatus
H = "host-a"


# -- domain ----------------------------------------------------------------------------------


def test_spec_to_create_params_the_agent_accepts():
    """A full spec becomes a VmStatic, and its VM.create params pass the agent's schema and
    build a domain with the kernel, disks, NICs and custom properties."""
    vm_id = uuid.uuid4()
    static = domain.vm_from_spec({
        "name": "web", "memory_mib": 512, "vcpus": 2, "kernel": "/boot/k", "initrd": "/boot/i",
        "cmdline": "console=ttyS0", "custom": {"tier": 1, "fast": True},
        "disks": [{"path": "/img/a.qcow2", "format": "qcow2"}, {"device": "cdrom"}],
        "nics": [{"network": "ovirtmgmt"}, {"mac": "52:54:00:00:00:01", "model": "e1000"}],
        "ha": True, "ha_priority": 50,
    }, vm_id)
    assert static.mem_mib == 512 and static.ha and static.custom == {"tier": "1",
                                                                      "fast": "true"}
    assert static.nics[0]["macAddr"] == domain.derived_mac(vm_id, 0)
    params = domain.create_params(static)
    assert params["vmId"] == str(vm_id) and params["kernelArgs"] == "console=ttyS0"
    Schema.load().bind_params("VM.create", {"vmParams": params})
    xml = build_domain(params)
    assert "/img/a.qcow2" in xml and "52:54:00:00:00:01" in xml and "/boot/k" in xml


def test_minimal_spec_and_stable_macs():
    """A spec needs only a name and memory; derived MACs are unicast and stable."""
    static = domain.vm_from_spec({"name": " tiny ", "memory_mib": 64})
    assert (static.name, static.vcpus, static.nics) == ("tiny", 1, [])
    params = domain.create_params(static)
    assert set(params) == {"vmId", "vmName", "memSize", "smp"}
    mac = domain.derived_mac(static.id, 3)
    assert mac == domain.derived_mac(static.id, 3) and not int(mac.split(":")[0], 16) & 1


@pytest.mark.parametrize("spec, word", [
    ({"memory_mib": 1}, "name"),
    ({"name": "a/b", "memory_mib": 1}, "name must not contain '/'"),
    ({"name": "x", "memory_mib": -1}, "memory_mib"),
    ({"name": "x", "memory_mib": True}, "memory_mib"),
    ({"name": "x", "memory_mib": 1, "vcpus": 0}, "vcpus"),
    ({"name": "x", "memory_mib": 1, "size": 3}, "size"),
    ({"name": "x", "memory_mib": 1, "disks": [{}]}, "path"),
    ({"name": "x", "memory_mib": 1, "disks": [{"path": "/a", "bus": "usb"}]}, "bus"),
    ({"name": "x", "memory_mib": 1, "nics": [{"mac": "01:00:00:00:00:00"}]}, "unicast"),
    ({"name": "x", "memory_mib": 1, "nics": [{"network": "a", "bridge": "b"}]}, "not both"),
    ({"name": "x", "memory_mib": 1, "custom": {"a": [1]}}, "custom.a"),
    ({"name": "x", "memory_mib": 1, "ha_priority": 101}, "ha_priority"),
    ({"name": "x", "memory_mib": 1, "pinned_host": "h1"}, "pinned_host"),
    ("not a spec", "object"),
])
def test_bad_specs_name_the_key(spec, word):
    """Each bad spec is refused with InvalidValue naming the key."""
    with pytest.raises(InvalidValue, match=word):
        domain.vm_from_spec(spec)


# -- wire ------------------------------------------------------------------------------------


def test_status_event_and_junk():
    """A VM_status event becomes a report with its notify time and exit details; junk gives
    None."""
    vm_id = str(uuid.uuid4())
    event = f"|virt|VM_status|{vm_id}"
    down = {vm_id: {"status": "Down", "statusTime": 5, "exitCode": 1, "exitReason": 2,
                    "exitMessage": "Lost connection with qemu process"}, "notify_time": 7}
    report = wire.status_event(event, down)
    assert (report.status, report.time, report.exit_code, report.exit_reason) == (
        S.DOWN, 7, 1, 2)
    up = wire.status_event(event, {vm_id: {"status": "Powering up"}, "notify_time": "9"})
    assert up.status is S.POWERING_UP and up.time == 9 and up.exit_message is None
    for junk in ((event, None), (event, {vm_id: {"status": "Dancing"}}), (event, {vm_id: 3}),
                 ("|virt|VM_status|nope", down), ("|other|x|y", down)):
        assert wire.status_event(*junk) is None


def test_poll_reports_statistics_and_host_samples():
    """getAllVmStats entries become reports (junk skipped) and samples of running VMs; host
    stats and capabilities are read leniently."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    stats = [
        {"vmId": a, "status": "Up", "statusTime": 3, "cpuUser": "1.5", "cpuSys": "0.5",
         "memUsage": "20", "balloonInfo": {"balloon_cur": "1024", "balloon_target": "2048"},
         "network": {"n": {"rx": "10", "tx": "20"}}, "disks": {"vda": {"readBytes": "5"}}},
        {"vmId": b, "status": "Down", "statusTime": 4, "exitCode": 0},
        {"vmId": "junk", "status": "Up"}, "junk", {"vmId": a},
    ]
    assert [(r.vm_id, r.status, r.time) for r in wire.poll_reports(stats)] == [
        (a, S.UP, 3), (b, S.DOWN, 4)]
    [sample] = wire.poll_statistics(stats)
    assert (sample.cpu_percent, sample.mem_percent, sample.balloon_cur_kib) == (2.0, 20.0, 1024)
    assert (sample.net_rx_bytes, sample.net_tx_bytes, sample.disk_read_bytes) == (10, 20, 5)
    assert wire.poll_reports({"not": "a list"}) == []
    host_id = uuid.uuid4()
    got = wire.host_statistics(host_id, {"cpuIdle": 90, "memFree": "100", "ksmState": "yes"})
    assert (got.cpu_idle, got.mem_free_mib, got.ksm_enabled) == (90.0, 100, None)
    assert wire.host_statistics(host_id, ["junk"]) is None
    assert wire.host_facts({"cpuThreads": "8", "memSize": "4096"}) == {
        "cpu_count": 8, "mem_total_mib": 4096}
    assert wire.host_facts({"cpuCores": "x"}) == {} and wire.host_facts(None) == {}
    assert wire.reserved_memory_mib({"reservedMem": "321"}) == 321


# -- reconcile -------------------------------------------------------------------------------


def known(vm_id, status=S.UP, host=H, **kw):
    """The engine's view of one VM."""
    return rc.KnownVm(vm_id, status, run_on_host=host, **kw)


def report(vm_id, status=S.UP, time=10, **kw):
    """A host's report of one VM."""
    return rc.VmReport(vm_id, status, time, **kw)


def test_reconcile_status_changes_and_staleness():
    """A changed status on the VM's own host is applied; the same status, or an older report
    than the engine's, is not."""
    views = {"a": known("a", S.POWERING_UP, last_notify_time=5),
             "b": known("b", S.UP), "c": known("c", S.PAUSED, last_notify_time=20)}
    actions = rc.reconcile(H, [report("a"), report("b"), report("c", S.UP, 15)], views,
                           complete=False)
    assert actions == [rc.ApplyStatus("a", report("a"), "reported Up")]


def test_reconcile_down_missing_external_moved():
    """Down is applied then cleared; a VM the host lacks is missing unless it is starting; an
    unknown running VM is external; a VM found on another host has moved."""
    views = {"down": known("down"), "gone": known("gone"), "starting": known("starting",
             S.WAIT_FOR_LAUNCH), "elsewhere": known("elsewhere", S.DOWN, host=None),
             "ext": known("ext", external=True, status=S.PAUSED)}
    reports = [report("down", S.DOWN, exit_message="crashed", exit_code=1),
               report("new", S.UP, name="stranger"), report("elsewhere", S.UP),
               report("old-leftover", S.DOWN)]
    actions = rc.reconcile(H, reports, views, complete=True, starting=["starting"])
    kinds = [(type(a).__name__, a.vm_id) for a in actions]
    assert kinds == [("ApplyStatus", "down"), ("ClearDown", "down"),
                     ("RecordExternal", "new"), ("ApplyStatus", "elsewhere"),
                     ("MarkMissing", "ext"), ("MarkMissing", "gone")]
    assert actions[3].moved and "Down in the engine" in actions[3].reason
    assert "crashed" in actions[0].reason


def test_reconcile_migration_rules():
    """A source's Down with exit reason 4 is only cleared; the destination's report counts
    once it is Up; a Down on a host the VM no longer runs on is only cleared."""
    views = {"m": known("m", S.MIGRATING_FROM, migrating_to_host="dst"),
             "x": known("x", S.UP, host="other")}
    src = rc.reconcile(H, [report("m", S.DOWN, exit_reason=4), report("x", S.DOWN)], views,
                       complete=False)
    assert [type(a).__name__ for a in src] == ["ClearDown", "ClearDown"]
    arriving = rc.reconcile("dst", [report("m", S.MIGRATING_TO)], views, complete=False)
    assert arriving == []
    arrived = rc.reconcile("dst", [report("m", S.UP)], views, complete=False)
    assert arrived[0].moved and arrived[0].vm_id == "m"


# -- snapshot and host events ----------------------------------------------------------------


def test_snapshot_counts_committed_but_not_pending():
    """A host's view counts the memory of its VMs as committed, except those still holding a
    pending reservation, and reads load, sizes and reserved memory from its row."""
    host_id = uuid.uuid4()
    host = Host(HostStatic(host_id, "h", "127.0.0.1"),
                HostDynamic(host_id, cpu_count=4, mem_total_mib=8192,
                            capabilities={"reservedMem": "300"}),
                HostStatistics(host_id, cpu_idle=75.0, mem_free_mib=5000))
    vms = [Vm(VmStatic(uuid.uuid4(), f"v{i}", mem_mib=1000, vcpus=2),
              VmDynamic(uuid.uuid4(), S.UP, run_on_host=host_id)) for i in range(3)]
    load = snapshot.load_of([(str(v.id), v.static) for v in vms], {str(vms[0].id)})
    view = snapshot.host_view(host, "Up", load)
    assert (view.memory_committed_mib, view.vm_count, view.vcpus_committed) == (2000, 3, 6)
    assert (view.memory_reserved_mib, view.cpu_load_percent, view.cpus) == (300, 25.0, 4)
    request = snapshot.vm_request(vms[0].static, only_host=host_id)
    assert request.pinned_host == str(host_id) and request.memory_mib == 1000
    assert snapshot.refusal_text("head\n  a: x\n  b: y") == "head — a: x | b: y"


def test_host_transition_events():
    """Each host state change maps to its audit type; a no-op maps to none."""
    host_id = uuid.uuid4()
    host = Host(HostStatic(host_id, "h", "::1"), HostDynamic(host_id))
    t0 = hoststate.added(0.0)
    up = hoststate.step(t0.after, HostEvent.CONNECTED, 1.0)
    assert transition_event(host, up).type == "HOST_UP"
    lost = hoststate.step(up.after, HostEvent.LINK_LOST, 2.0)
    assert transition_event(host, lost).type == "HOST_CONNECTING"
    back = hoststate.step(lost.after, HostEvent.CONNECTED, 3.0)
    assert transition_event(host, back).type == "HOST_RECOVERED"
    again = hoststate.step(back.after, HostEvent.HEARTBEAT_OK, 4.0)
    assert transition_event(host, again) is None
    assert host_url("::1", 54321) == "ws://[::1]:54321/jsonrpc"
