"""Host statistics: HostStats computed from hand-built samples, plus one real psutil sample."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from vdsmlike.api.schema import Schema
from vdsmlike.host.stats import (
    CpuTimes,
    HostSample,
    HostStatsSampler,
    MemorySample,
    NicSample,
    VmCounts,
    host_stats,
    mom_fields,
    parse_cpu_list,
    take_host_sample,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
STARTED = 1_700_000_000.0


def sample(
    *,
    at: float = 0.0,
    user: float = 100.0,
    system: float = 50.0,
    idle: float = 850.0,
    agent: tuple[float, float] = (1.0, 0.5),
    rx: int = 1000,
    **changes,
) -> HostSample:
    """A two-CPU host sample ``at`` seconds after the first one."""
    half = CpuTimes(user=user / 2, nice=0.0, system=system / 2, idle=idle / 2)
    base = HostSample(
        timestamp=STARTED + 30 + at,
        monotonic=500.0 + at,
        cpu=CpuTimes(user=user, nice=0.0, system=system, idle=idle),
        per_cpu=(half, half),
        agent_cpu=agent,
        memory=MemorySample(
            total=16 * GIB,
            free=4 * GIB,
            cached=2 * GIB,
            buffers=GIB,
            sreclaimable=GIB,
            swap_total=2 * GIB,
            swap_free=GIB + 512 * MIB,
        ),  # fmt: skip
        nics={"eth0": NicSample(rx, 2000, 1, 2, 3, 4, speed=1000, is_up=True)},
        disk_free={"/tmp": 10 * GIB + 5, "/var/log": 3 * MIB},
        load_avg=(0.5, 0.25, 0.125),
        boot_time=1_690_000_000.7,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The repository's schema."""
    return Schema.load()


def test_first_sample_reports_zero_rates_and_full_idle(schema):
    """With no previous sample every CPU rate is zero and cpuIdle is 100."""
    stats = host_stats(None, sample(), vm_counts=VmCounts(), agent_started=STARTED)
    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuIdle"]) == (0.0, 0.0, 100.0)
    assert (stats["cpuUserVdsmd"], stats["cpuSysVdsmd"]) == (0.0, 0.0)
    assert stats["cpuStatistics"] == {
        "0": {"nodeIndex": 0, "cpuUser": 0.0, "cpuSys": 0.0, "cpuIdle": 100.0},
        "1": {"nodeIndex": 0, "cpuUser": 0.0, "cpuSys": 0.0, "cpuIdle": 100.0},
    }
    schema.check_result("Host.getStats", stats)


def test_cpu_percentages_come_from_jiffy_deltas():
    """User, system and idle are shares of all CPU time between the two samples."""
    prev = sample()
    cur = sample(at=10, user=130.0, system=60.0, idle=910.0)  # +30 user, +10 sys, +60 idle
    stats = host_stats(prev, cur, vm_counts=VmCounts(), agent_started=STARTED)
    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuIdle"]) == (30.0, 10.0, 60.0)
    assert stats["cpuStatistics"]["1"] == {
        "nodeIndex": 0, "cpuUser": 30.0, "cpuSys": 10.0, "cpuIdle": 60.0,
    }  # fmt: skip


def test_nice_irq_and_softirq_count_as_user_and_system():
    """Niced time is user time; irq and softirq are system time; iowait and steal are neither."""
    prev = sample()
    cur = replace(
        sample(at=10),
        cpu=CpuTimes(user=100, nice=10, system=50, idle=850, iowait=70, irq=5, softirq=5, steal=10),
    )
    stats = host_stats(prev, cur, vm_counts=VmCounts(), agent_started=STARTED)
    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuIdle"]) == (10.0, 10.0, 80.0)


def test_counters_going_backwards_give_zero_not_negative():
    """A CPU counter that went down (reset) gives zero rather than a negative percentage."""
    prev = sample(user=500.0, agent=(9.0, 9.0))
    cur = sample(at=10, user=100.0, system=60.0, idle=950.0, agent=(1.0, 1.0))
    stats = host_stats(prev, cur, vm_counts=VmCounts(), agent_started=STARTED)
    assert stats["cpuUser"] == 0.0 and stats["cpuSys"] >= 0.0 and stats["cpuIdle"] <= 100.0
    assert (stats["cpuUserVdsmd"], stats["cpuSysVdsmd"]) == (0.0, 0.0)


def test_same_monotonic_time_is_treated_as_no_previous_sample():
    """Two samples with no time between them report the first-sample figures."""
    prev = sample()
    cur = replace(sample(user=200.0), monotonic=prev.monotonic)
    stats = host_stats(prev, cur, vm_counts=VmCounts(), agent_started=STARTED)
    assert (stats["cpuUser"], stats["cpuIdle"], stats["cpuUserVdsmd"]) == (0.0, 100.0, 0.0)


def test_agent_cpu_is_percent_of_one_cpu():
    """The agent's CPU use is its CPU seconds per wall second, in percent of one CPU."""
    prev = sample(agent=(1.0, 0.5))
    cur = sample(at=10, agent=(2.5, 0.75))
    stats = host_stats(prev, cur, vm_counts=VmCounts(), agent_started=STARTED)
    assert (stats["cpuUserVdsmd"], stats["cpuSysVdsmd"]) == (15.0, 2.5)


def test_memory_uses_vdsms_available_formula():
    """memUsed is 100 - (Free+Cached+Buffers+SReclaimable)/Total; memFree is that sum in MiB."""
    stats = host_stats(None, sample(), vm_counts=VmCounts(), agent_started=STARTED)
    assert stats["memUsed"] == 50  # 8 GiB available of 16
    assert stats["memFree"] == 8 * 1024
    assert stats["memAvailable"] == 8 * 1024
    assert stats["memCommitted"] == 0
    assert (stats["swapTotal"], stats["swapFree"]) == (2048, 1536)


def test_committed_memory_reduces_available():
    """Committed VM memory is reported and subtracted from memAvailable."""
    counts = VmCounts(mem_committed_mib=1000)
    stats = host_stats(None, sample(), vm_counts=counts, agent_started=STARTED)
    assert (stats["memCommitted"], stats["memAvailable"]) == (1000, 8 * 1024 - 1000)


def test_zero_total_memory_does_not_divide_by_zero():
    """A sample with zero total memory reports 0 % used instead of failing."""
    empty = MemorySample(0, 0, 0, 0, 0, 0, 0)
    stats = host_stats(None, sample(memory=empty), vm_counts=VmCounts(), agent_started=STARTED)
    assert (stats["memUsed"], stats["memFree"]) == (0, 0)
    assert stats["numaNodeMemFree"] == {"0": {"memFree": 0, "memPercent": 0}}


def test_counts_network_disks_and_times(schema):
    """VM counts, NIC counters, free disk space, load and times have VDSM's names and types."""
    counts = VmCounts(vm_count=4, vm_active=2, vm_migrating=2, incoming=1, outgoing=1)
    stats = host_stats(sample(), sample(at=15), vm_counts=counts, agent_started=STARTED)
    assert [stats[k] for k in ("vmCount", "vmActive", "vmMigrating")] == [4, 2, 2]
    assert (stats["incomingVmMigrations"], stats["outgoingVmMigrations"]) == (1, 1)
    assert stats["network"] == {
        "eth0": {"rx": "1000", "tx": "2000", "rxErrors": "1", "txErrors": "2",
                 "rxDropped": "3", "txDropped": "4", "speed": "1000", "state": "up",
                 "sampleTime": STARTED + 45},
    }  # fmt: skip
    assert stats["diskStats"] == {"/tmp": {"free": "10240"}, "/var/log": {"free": "3"}}
    assert stats["cpuLoad"] == "0.25"
    assert (stats["elapsedTime"], stats["bootTime"]) == (45, 1_690_000_000)
    assert stats["dateTime"] == "2023-11-14T22:14:05 GMT"
    schema.check_result("Host.getStats", stats)


def test_numa_nodes_from_sysfs_and_cpu_nodes():
    """NUMA figures from /sys give memFree MiB and used percent per node, and CPU node indices."""
    cur = sample(numa={0: (8 * GIB, 2 * GIB), 1: (8 * GIB, 6 * GIB)}, cpu_nodes={1: 1})
    stats = host_stats(None, cur, vm_counts=VmCounts(), agent_started=STARTED)
    assert stats["numaNodeMemFree"] == {
        "0": {"memFree": 2048, "memPercent": 75},
        "1": {"memFree": 6144, "memPercent": 25},
    }
    assert [stats["cpuStatistics"][c]["nodeIndex"] for c in ("0", "1")] == [0, 1]


def test_without_numa_one_node_holds_the_host():
    """Without /sys NUMA data, node 0 reports the host's available memory."""
    stats = host_stats(None, sample(), vm_counts=VmCounts(), agent_started=STARTED)
    assert stats["numaNodeMemFree"] == {"0": {"memFree": 8192, "memPercent": 50}}


def test_mom_disabled_by_default():
    """Without MOM, momStatus is "disabled" and the KSM fields are zero or false."""
    assert mom_fields(None) == {
        "momStatus": "disabled", "memShared": 0, "ksmState": False, "ksmPages": 0,
        "ksmCpu": 0.0, "ksmMergeAcrossNodes": False,
    }  # fmt: skip


def test_mom_statistics_fill_ksm_fields(schema):
    """MOM's host statistics become the KSM fields, shared pages in MiB."""
    mom = {"ksm_run": 1, "ksm_pages_to_scan": 64, "ksmd_cpu_usage": 2.5,
           "ksm_merge_across_nodes": 1, "ksm_pages_sharing": 2560}  # fmt: skip
    stats = host_stats(None, sample(), vm_counts=VmCounts(), agent_started=STARTED, mom=mom)
    assert (stats["momStatus"], stats["memShared"], stats["ksmState"]) == ("active", 10, True)
    assert (stats["ksmPages"], stats["ksmCpu"], stats["ksmMergeAcrossNodes"]) == (64, 2.5, True)
    schema.check_result("Host.getStats", stats)


def test_mom_wire_names_win_and_bad_values_fall_back():
    """Wire-named MOM fields are taken as they are; unusable values fall back to defaults."""
    fields = mom_fields({"momStatus": "inactive", "ksmPages": "lots", "ksmCpu": None})
    assert (fields["momStatus"], fields["ksmPages"], fields["ksmCpu"]) == ("inactive", 0, 0.0)
    assert mom_fields({"momStatus": "weird"})["momStatus"] == "inactive"


def test_sampler_keeps_the_last_two_samples():
    """The sampler computes from the last two updates and refuses before the first."""
    sampler = HostStatsSampler()
    with pytest.raises(LookupError):
        sampler.stats(VmCounts(), agent_started=STARTED)
    sampler.update(sample(user=0.0))
    sampler.update(sample())
    sampler.update(sample(at=10, user=130.0, system=60.0, idle=910.0))
    stats = sampler.stats(VmCounts(), agent_started=STARTED)
    assert stats["cpuUser"] == 30.0
    assert sampler.latest is not None and sampler.latest.monotonic == 510.0


def test_parse_cpu_list():
    """Kernel CPU lists expand ranges and skip malformed parts."""
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("") == [] and parse_cpu_list("x,2") == [2]


def fake_psutil() -> SimpleNamespace:
    """A stand-in for psutil with fixed figures."""
    cpu = SimpleNamespace(user=10.0, nice=1.0, system=5.0, idle=84.0)
    return SimpleNamespace(
        cpu_times=lambda percpu=False: [cpu, cpu] if percpu else cpu,
        Process=lambda pid: SimpleNamespace(cpu_times=lambda: SimpleNamespace(user=1, system=2)),
        virtual_memory=lambda: SimpleNamespace(total=4 * GIB, free=GIB, cached=GIB, buffers=0),
        swap_memory=lambda: SimpleNamespace(total=0, free=0),
        net_io_counters=lambda pernic: {"lo": SimpleNamespace(
            bytes_recv=1, bytes_sent=2, errin=0, errout=0, dropin=0, dropout=0)},
        net_if_stats=lambda: {},
        disk_usage=lambda path: SimpleNamespace(free=MIB) if path == "/ok" else _missing(path),
        getloadavg=lambda: (1, 2, 3),
        boot_time=lambda: 100,
    )  # fmt: skip


def _missing(path: str):
    """Raise as ``disk_usage`` does for a missing path."""
    raise FileNotFoundError(path)


def test_take_host_sample_with_fake_psutil_and_sysfs(tmp_path: Path):
    """take_host_sample reads psutil, /proc/meminfo, NUMA nodes and THP under the given root."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(
        "MemTotal: 4096 kB\nMemFree: 1024 kB\nBuffers: 10 kB\nCached: 100 kB\n"
        "SReclaimable: 50 kB\nHugePages_Total: 0\n"
    )
    node = tmp_path / "sys" / "devices" / "system" / "node" / "node1"
    node.mkdir(parents=True)
    (node / "meminfo").write_text("Node 1 MemTotal: 2048 kB\nNode 1 MemFree: 512 kB\n")
    (node / "cpulist").write_text("0-1\n")
    thp = tmp_path / "sys" / "kernel" / "mm" / "transparent_hugepage"
    thp.mkdir(parents=True)
    (thp / "enabled").write_text("always madvise [never]\n")
    got = take_host_sample(
        proc=fake_psutil(), disk_paths=("/ok", "/gone"), now=lambda: 7.0,
        monotonic=lambda: 3.0, root=str(tmp_path),
    )  # fmt: skip
    assert got.memory == MemorySample(4096 * 1024, 1024 * 1024, 100 * 1024, 10 * 1024,
                                       50 * 1024, 0, 0)  # fmt: skip
    assert got.numa == {1: (2048 * 1024, 512 * 1024)} and got.cpu_nodes == {0: 1, 1: 1}
    assert (got.thp_state, got.disk_free, got.agent_cpu) == ("never", {"/ok": MIB}, (1.0, 2.0))
    assert (got.timestamp, got.monotonic, got.load_avg) == (7.0, 3.0, (1.0, 2.0, 3.0))
    assert got.cpu.busy_user == 11.0 and len(got.per_cpu) == 2
    assert got.nics["lo"].is_up is False and got.nics["lo"].tx_bytes == 2


def test_take_host_sample_falls_back_to_psutil_memory(tmp_path: Path):
    """Without /proc/meminfo, memory comes from psutil (whose cached holds the slab)."""
    got = take_host_sample(proc=fake_psutil(), disk_paths=(), root=str(tmp_path))
    assert got.memory.available == 2 * GIB and got.memory.sreclaimable == 0
    assert (got.numa, got.thp_state) == ({}, "")


def test_real_host_sample_is_sane(schema):
    """Two real samples of this machine give plausible, schema-valid HostStats."""
    first = take_host_sample(disk_paths=("/tmp", "/nonexistent-vdsmlike"))
    sum(range(200_000))
    second = take_host_sample(disk_paths=("/tmp",))
    assert second.monotonic >= first.monotonic
    assert second.memory.total > 0 and 0 < second.memory.available <= second.memory.total * 1.01
    assert 1 <= len(second.per_cpu) <= (os.cpu_count() or 1)
    assert "/tmp" in second.disk_free and "/nonexistent-vdsmlike" not in first.disk_free
    assert second.boot_time < time.time()
    stats = host_stats(first, second, vm_counts=VmCounts(), agent_started=time.time() - 1)
    total = stats["cpuUser"] + stats["cpuSys"] + stats["cpuIdle"]
    assert 99.9 <= total <= 100.1
    assert 0 <= stats["memUsed"] <= 100 and stats["memFree"] > 0
    schema.check_result("Host.getStats", stats)
