"""MOM's collectors: host figures from /proc and a fake KSM sysfs tree, guest fields from the
agent's VM statistics, with MOM's names and units."""

from __future__ import annotations

import pytest

from mom.collectors import guest
from mom.collectors.host import (
    KSM_FILES,
    CollectionError,
    HostCpu,
    HostKsm,
    HostMemory,
    memory_fields,
    parse_meminfo,
    parse_vmstat,
)

MEMINFO = """MemTotal:       16000000 kB
MemFree:         4000000 kB
MemAvailable:    9000000 kB
Buffers:          100000 kB
Cached:          2000000 kB
SwapTotal:       1000000 kB
SwapFree:         600000 kB
AnonPages:       5000000 kB
"""


def fake_proc(tmp_path, meminfo=MEMINFO, pswpin=10, pswpout=20, cpus=3):
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "meminfo").write_text(meminfo)
    (proc / "vmstat").write_text(f"nr_free_pages 1\npswpin {pswpin}\npswpout {pswpout}\n")
    (proc / "cpuinfo").write_text("".join(f"processor\t: {i}\nflags\t: x\n\n" for i in range(cpus)))
    return proc


def test_host_memory_uses_mom_names_and_total_ram_as_available(tmp_path):
    """mem_available is MemTotal (as in MOM), mem_free adds buffers and cache, swap usage."""
    fields = HostMemory(str(fake_proc(tmp_path))).collect()
    assert fields == {
        "mem_available": 16000000,
        "mem_unused": 4000000,
        "mem_free": 6100000,
        "anon_pages": 5000000,
        "swap_total": 1000000,
        "swap_usage": 400000,
        "swap_in": 0,
        "swap_out": 0,
    }


def test_host_swap_rates_are_deltas_between_samples(tmp_path):
    """swap_in/swap_out are the pswpin/pswpout increments since the previous sample."""
    proc = fake_proc(tmp_path)
    collector = HostMemory(str(proc))
    collector.collect()
    fake_proc(tmp_path, pswpin=15, pswpout=50)
    fields = collector.collect()
    assert (fields["swap_in"], fields["swap_out"]) == (5, 30)


def test_host_memory_without_memtotal_is_a_collection_error():
    """A meminfo without MemTotal cannot be sampled."""
    with pytest.raises(CollectionError, match="MemTotal"):
        memory_fields(parse_meminfo("MemFree: 1 kB\n"), parse_vmstat(""), None)


def test_cpu_count_counts_processor_lines(tmp_path):
    """HostCpu reports one CPU per processor line of cpuinfo."""
    assert HostCpu(str(fake_proc(tmp_path, cpus=3))).collect() == {"cpu_count": 3}


def test_ksm_reads_every_sysfs_counter_from_its_root(tmp_path):
    """HostKsm reports ksm_<file> for each KSM file under the configured root."""
    root = tmp_path / "ksm"
    root.mkdir()
    for i, name in enumerate(KSM_FILES):
        (root / name).write_text(f"{i}\n")
    ksm = HostKsm(str(root))
    fields = ksm.collect()
    assert {f"ksm_{n}": i for i, n in enumerate(KSM_FILES)}.items() <= fields.items()
    assert fields["ksm_shareable"] >= 0 and fields["ksmd_cpu_usage"] >= 0
    assert "ksm_run" in ksm.fields


def test_a_host_without_ksm_reports_its_fields_as_optional(tmp_path):
    """Without the KSM tree nothing is collected and no KSM field is mandatory."""
    ksm = HostKsm(str(tmp_path / "absent"))
    assert ksm.collect() == {} and not ksm.fields and "ksm_run" in ksm.optional


def test_a_broken_ksm_file_is_a_collection_error(tmp_path):
    """An unreadable counter is reported, not silently zero."""
    root = tmp_path / "ksm"
    root.mkdir()
    for name in KSM_FILES:
        (root / name).write_text("x\n")
    with pytest.raises(CollectionError, match="full_scans"):
        HostKsm(str(root)).collect()


VM = {
    "vmId": "11111111-2222-3333-4444-555555555555",
    "vmName": "web",
    "status": "Up",
    "memUsage": "40",
    "memoryStats": {
        "mem_total": "1000000",
        "mem_unused": "400000",
        "mem_free": "450000",
        "swap_in": "1",
        "swap_out": "2",
        "majflt": "3",
        "pageflt": "10",
    },
    "balloonInfo": {"balloon_max": "1048576", "balloon_min": "0", "balloon_cur": "1000000"},
    "vcpuCount": "2",
    "vcpuQuota": "-1",
    "vcpuPeriod": "100000",
    "vcpuUserLimit": "100",
}


def test_guest_fields_follow_vdsm_interface_mapping():
    """Guest memory, balloon and CPU tune fields come from VM stats as MOM's VDSM interface
    maps them (mem_total is mem_available, minor faults are pageflt - majflt)."""
    fields = guest.guest_fields(VM)
    assert fields["mem_available"] == 1000000 and fields["mem_unused"] == 400000
    assert (fields["major_fault"], fields["minor_fault"]) == (3, 7)
    assert (fields["balloon_cur"], fields["balloon_max"], fields["balloon_min"]) == (
        1000000,
        1048576,
        0,
    )
    assert (fields["vcpu_count"], fields["vcpu_quota"], fields["vcpu_user_limit"]) == (2, -1, 100)


def test_guest_without_memory_usage_has_no_memory_fields():
    """memUsage 0 means the guest reports no memory figures: none are collected."""
    fields = guest.guest_fields({**VM, "memUsage": "0"})
    assert "mem_unused" not in fields and fields["vcpu_count"] == 2


def test_only_up_vms_are_guests():
    """Paused, starting and Down VMs are not MOM guests."""
    vms = [VM, {**VM, "vmId": "x", "status": "Paused"}, {**VM, "vmId": "y", "status": "Down"}]
    assert [v["vmId"] for v in guest.up_guests(vms)] == [VM["vmId"]]


def test_io_tune_objects_expose_limits_and_setters():
    """io_tune items read maximum limits as attributes and their setters change current."""
    policy = {
        "policy": [
            {"name": "vda", "path": "/a", "maximum": {"total_bytes_sec": 500}, "guaranteed": {}}
        ],
        "current_values": [{"name": "vda", "path": "/a", "ioTune": {"total_bytes_sec": 0}}],
    }
    fields = guest.guest_fields(VM, policy)
    [tune] = fields["io_tune"]
    assert tune.maximum.total_bytes_sec == 500 and tune.current.total_bytes_sec == 0
    tune.setTotalBytesSec(500.7)
    assert tune.state()["ioTune"]["total_bytes_sec"] == 500
    assert fields["io_tune_current"][0]["ioTune"]["total_bytes_sec"] == 0
