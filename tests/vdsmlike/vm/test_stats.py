"""Sampled VmStats fields from libvirt bulk samples: CPU, memory, balloon, disks, network."""

from __future__ import annotations

from typing import Any

import pytest

from vdsmlike.api.schema import Schema
from vdsmlike.vm.stats import devices, sampled_vm_stats

VM_ID = "5f2d3a9e-1c4b-4e6f-8a7d-0b1c2d3e4f50"
IDENTITY = {
    "vmId": VM_ID, "vmName": "web1", "vmType": "kvm", "status": "Up",
    "statusTime": 2**31 + 5000, "elapsedTime": "42", "monitorResponse": "0",
    "pauseCode": "NOERR", "timeOffset": "0", "clientIp": "", "displayInfo": [],
    "hash": "1", "vmJobs": {}, "guestIPs": "",
}  # fmt: skip
NIC = {"vnet0": {"macAddr": "52:54:00:12:34:56", "name": "vnet0"}}


def driver_sample() -> dict[str, Any]:
    """What the libvirt test driver's bulk stats plus the adapter's dom.info() fill give."""
    return {"state.state": 1, "state.reason": 1, "balloon.current": 1048576,
            "balloon.maximum": 2097152, "vcpu.current": 2, "vcpu.maximum": 2,
            "cpu.time": 5_000_000_000}  # fmt: skip


def qemu_sample(step: int = 0) -> dict[str, Any]:
    """A QEMU-shaped sample with guest balloon stats, one disk (plus backing) and one NIC."""
    return {
        "state.state": 1, "state.reason": 1,
        "cpu.time": 10_000_000_000 + step * 3_000_000_000,
        "cpu.user": 7_000_000_000 + step * 2_000_000_000,
        "cpu.system": 3_000_000_000 + step * 1_000_000_000,
        "balloon.current": 2097152, "balloon.maximum": 4194304,
        "balloon.swap_in": 100 + step * 150, "balloon.swap_out": 50,
        "balloon.major_fault": 10 + step * 30, "balloon.minor_fault": 1000 + step * 1500,
        "balloon.unused": 1200000, "balloon.available": 2000000, "balloon.usable": 1500000,
        "balloon.disk_caches": 90000, "balloon.rss": 2200000, "balloon.last-update": 1700000000,
        "vcpu.current": 2, "vcpu.maximum": 4,
        "block.count": 2,
        "block.0.name": "vda", "block.0.path": "/images/web1.qcow2",
        "block.0.rd.reqs": 100 + step * 10, "block.0.rd.bytes": 409600 + step * 15 * 4096,
        "block.0.rd.times": 1_000_000 + step * 2_000_000,
        "block.0.wr.reqs": 20 + step * 5, "block.0.wr.bytes": 8192 + step * 15 * 1024,
        "block.0.wr.times": 500_000 + step * 600_000,
        "block.0.fl.reqs": 4 + step * 2, "block.0.fl.times": 40_000 + step * 100_000,
        "block.0.allocation": 200 * 2**20, "block.0.capacity": 2**30,
        "block.0.physical": 210 * 2**20,
        "block.1.name": "vda", "block.1.backingIndex": 1, "block.1.rd.reqs": 999,
        "net.count": 1, "net.0.name": "vnet0",
        "net.0.rx.bytes": 1200 + step * 300, "net.0.rx.pkts": 12, "net.0.rx.errs": 1,
        "net.0.rx.drop": 2, "net.0.tx.bytes": 800, "net.0.tx.pkts": 8, "net.0.tx.errs": 3,
        "net.0.tx.drop": 4,
    }  # fmt: skip


def stats(prev, cur, *, interval: float = 15.0, target: int | None = 2097152, **kw) -> dict:
    """Sampled stats of ``cur`` after ``prev`` (``interval`` s earlier)."""
    return sampled_vm_stats(
        prev, cur, prev_time=100.0 if prev is not None else None, cur_time=100.0 + interval,
        balloon_target=target, ballooning_enabled=kw.pop("enabled", True),
        interfaces=kw.pop("interfaces", NIC), **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The repository's schema."""
    return Schema.load()


def check(schema: Schema, sampled: dict) -> None:
    """Fail unless the sampled fields make a schema-valid VmStats of a running VM."""
    schema.check_result("VM.getStats", [{**IDENTITY, **sampled}])


def test_no_sample_yet_gives_nothing():
    """Before the first sample there are no sampled fields at all."""
    assert stats(None, None) == {}


def test_cpu_percent_of_one_cpu_from_two_samples(schema):
    """cpuUser and cpuSys are 100 * Δns / interval / 1e9 of cpu.user and cpu.system."""
    got = stats(qemu_sample(0), qemu_sample(1))
    assert (got["cpuUser"], got["cpuSys"]) == ("13.33", "6.67")  # 2 s and 1 s over 15 s
    assert (got["cpuUsage"], got["cpuActual"]) == ("13000000000", True)
    check(schema, got)


def test_cpu_time_alone_counts_as_user():
    """Without cpu.user and cpu.system, all of cpu.time's growth is user time."""
    prev, cur = driver_sample(), driver_sample()
    cur["cpu.time"] += 7_500_000_000
    got = stats(prev, cur)
    assert (got["cpuUser"], got["cpuSys"], got["cpuActual"]) == ("50.00", "0.00", True)
    assert got["cpuUsage"] == "12500000000"


def test_one_sample_is_not_actual():
    """With one sample CPU rates are zero and cpuActual is false."""
    got = stats(None, qemu_sample())
    assert (got["cpuUser"], got["cpuSys"], got["cpuActual"]) == ("0.00", "0.00", False)
    assert got["cpuUsage"] == "10000000000"


def test_bad_interval_is_treated_as_one_sample():
    """A zero, negative or missing interval gives first-sample figures, not a division error."""
    for interval in (0.0, -5.0):
        got = stats(qemu_sample(0), qemu_sample(1), interval=interval)
        assert got["cpuActual"] is False and got["disks"]["vda"]["readRate"] == "0.0"
    got = sampled_vm_stats(qemu_sample(0), qemu_sample(1), prev_time=None, cur_time=5.0,
                           balloon_target=None, ballooning_enabled=False)  # fmt: skip
    assert got["cpuActual"] is False


def test_counter_reset_gives_zero_rates():
    """Counters that went down (wrap or reset) give zero rates, never negative ones."""
    got = stats(qemu_sample(5), qemu_sample(0))
    assert (got["cpuUser"], got["cpuSys"]) == ("0.00", "0.00")
    assert got["disks"]["vda"]["readRate"] == "0.0" and got["disks"]["vda"]["readLatency"] == "0"
    assert got["memoryStats"]["swap_in"] == "0" and got["memoryStats"]["minflt"] == "0"


def test_test_driver_sample(schema):
    """A test-driver sample gives vCPUs, CPU usage and the balloon, with no guest memory data."""
    got = stats(None, driver_sample())
    assert got["vcpuCount"] == "2" and got["cpuUsage"] == "5000000000"
    assert (got["vcpuQuota"], got["vcpuPeriod"], got["vcpuUserLimit"]) == ("-1", "100000", "100")
    assert (got["memUsage"], got["memoryStats"]) == ("0", {})
    assert got["balloonInfo"] == {
        "balloon_max": "2097152", "balloon_min": "0", "balloon_cur": "1048576",
        "balloon_target": "2097152", "ballooning_enabled": True,
    }  # fmt: skip
    assert (got["disks"], got["network"]) == ({}, {})
    check(schema, got)


def test_qemu_sample_memory_from_balloon_stats(schema):
    """Guest balloon stats give memUsage and memoryStats in KiB, swap and faults per second."""
    got = stats(qemu_sample(0), qemu_sample(1))
    assert got["memUsage"] == "25"  # 100 - usable 1.5 M / available 2 M
    assert got["memoryStats"] == {
        "mem_total": "2000000", "mem_unused": "1200000", "mem_free": "1500000",
        "mem_buffers": "0", "mem_cached": "90000", "swap_in": "10", "swap_out": "0",
        "majflt": "2", "minflt": "100", "pageflt": "102",
    }  # fmt: skip
    check(schema, got)


def test_unused_stands_in_for_usable():
    """Without balloon.usable, memUsage and mem_free use balloon.unused."""
    cur = qemu_sample()
    del cur["balloon.usable"]
    got = stats(None, cur)
    assert got["memUsage"] == "40" and got["memoryStats"]["mem_free"] == "1200000"


def test_balloon_info_empty_until_target_known(schema):
    """balloonInfo stays empty while the target is unknown, so MOM skips the VM."""
    got = stats(None, qemu_sample(), target=None)
    assert got["balloonInfo"] == {}
    check(schema, got)
    got = stats(None, qemu_sample(), target=1048576, enabled=False)
    assert got["balloonInfo"] == {
        "balloon_max": "4194304", "balloon_min": "0", "balloon_cur": "2097152",
        "balloon_target": "1048576", "ballooning_enabled": False,
    }  # fmt: skip


def test_balloon_info_without_balloon_counters():
    """A known target with no balloon counters reports the target as current and maximum."""
    got = stats(None, {"state.state": 1}, target=524288)
    assert got["balloonInfo"]["balloon_cur"] == "524288"
    assert got["balloonInfo"]["balloon_max"] == "524288"


def test_disk_rates_latencies_and_sizes(schema):
    """Disk rates are B/s, latencies ns per request, counters cumulative, sizes in bytes."""
    got = stats(qemu_sample(0), qemu_sample(1))
    assert list(got["disks"]) == ["vda"]
    assert got["disks"]["vda"] == {
        "readRate": "4096.0", "writeRate": "1024.0", "readLatency": "200000",
        "writeLatency": "120000", "flushLatency": "50000", "readOps": "110", "writeOps": "25",
        "readBytes": str(409600 + 15 * 4096), "writtenBytes": str(8192 + 15 * 1024),
        "truesize": str(200 * 2**20), "apparentsize": str(210 * 2**20), "imageID": "",
    }  # fmt: skip
    check(schema, got)


def test_disks_matched_by_name_not_index():
    """A disk keeps its rate when its bulk-stats index changes between samples."""
    prev = {"block.count": 2, "block.0.name": "vdb", "block.0.rd.bytes": 0,
            "block.1.name": "vda", "block.1.rd.bytes": 1000}  # fmt: skip
    cur = {"block.count": 1, "block.0.name": "vda", "block.0.rd.bytes": 2500}
    got = stats(prev, cur, interval=1.5)
    assert got["disks"]["vda"]["readRate"] == "1000.0" and "vdb" not in got["disks"]


def test_network_counters_and_interface_names(schema):
    """Guest NIC counters are cumulative strings with the MAC and name the VM definition gives."""
    got = stats(qemu_sample(0), qemu_sample(1))
    assert got["network"] == {
        "vnet0": {"rx": "1500", "tx": "800", "rxErrors": "1", "rxDropped": "2",
                  "txErrors": "3", "txDropped": "4", "speed": "1000", "state": "unknown",
                  "macAddr": "52:54:00:12:34:56", "name": "vnet0", "sampleTime": 115.0},
    }  # fmt: skip
    check(schema, got)


def test_unknown_interface_gets_its_dev_name():
    """An interface missing from the interface map is named by its target dev, MAC empty."""
    got = stats(None, qemu_sample(), interfaces=None)
    assert (got["network"]["vnet0"]["name"], got["network"]["vnet0"]["macAddr"]) == ("vnet0", "")


def test_cpu_tune_overrides_defaults():
    """Known CPU tuning values replace the defaults; junk ones are ignored."""
    tune = {"vcpuQuota": 50000, "vcpuPeriod": "junk", "vcpuUserLimit": "80"}
    got = stats(None, qemu_sample(), cpu_tune=tune)
    assert (got["vcpuQuota"], got["vcpuPeriod"], got["vcpuUserLimit"]) == ("50000", "100000", "80")


def test_io_tune_is_reported_when_given(schema):
    """Given disk limits become ``ioTune``: ints, path "" when unknown, odd entries left out."""
    limits = {"total_bytes_sec": 0, "read_bytes_sec": 4096, "write_bytes_sec": 0,
              "total_iops_sec": 0, "read_iops_sec": 0, "write_iops_sec": 10}  # fmt: skip
    entries = [
        {"name": "vda", "path": "/images/a.img", "ioTune": limits},
        {"name": "vdb", "path": None, "ioTune": {**limits, "read_iops_sec": -1, "x": "y"}},
        {"name": 5, "ioTune": limits},
        {"name": "vdc", "ioTune": "none"},
        "vdd",
    ]
    got = stats(None, qemu_sample(), io_tune=entries)
    vdb = {k: v for k, v in limits.items() if k != "read_iops_sec"}
    assert got["ioTune"] == [
        {"name": "vda", "path": "/images/a.img", "ioTune": limits},
        {"name": "vdb", "path": "", "ioTune": vdb},
    ]
    assert "ioTune" not in stats(None, qemu_sample())
    assert stats(None, qemu_sample(), io_tune="junk")["ioTune"] == []
    check(schema, stats(None, qemu_sample(), io_tune=entries[:1]))


def test_devices_groups_keys_and_skips_nameless():
    """Bulk keys group by device name; entries without a name and odd keys are skipped."""
    sample = {"net.count": 2, "net.0.rx.bytes": 5, "net.1.name": "vnet1", "net.1.rx.bytes": 7,
              "net.x.name": "bad", "net.2.name": 42, 7: "int key"}  # fmt: skip
    assert devices(sample, "net") == {"vnet1": {"name": "vnet1", "rx.bytes": 7}}


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"cpu.time": "lots", "cpu.user": None, "balloon.available": 0, "balloon.usable": 5},
        {"cpu.time": float("nan"), "vcpu.current": float("inf"), "balloon.current": [1]},
        {"block.count": 10**9, "block.0.name": "vda", "block.0.rd.bytes": "x",
         "block.0.rd.reqs": -3, "net.count": 1, "net.0.name": "vnet0", "net.0.rx.bytes": {}},
        {"balloon.swap_in": True, "balloon.minor_fault": "12.5", "cpu.system": 1},
    ],
)  # fmt: skip
def test_odd_samples_never_raise(schema, odd):
    """Missing, non-numeric or absurd values never make the stats call fail."""
    for prev in (None, qemu_sample(), odd):
        got = sampled_vm_stats(
            prev, odd, prev_time=1.0, cur_time=16.0, balloon_target="junk",
            ballooning_enabled=True, interfaces={"vnet0": "not a dict"},
        )  # fmt: skip
        assert got["balloonInfo"] == {}
        check(schema, got)
