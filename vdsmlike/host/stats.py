"""Host statistics: psutil samples taken on a worker thread, and VDSM's ``HostStats`` from two.

:func:`take_host_sample` is the only function here that does I/O (psutil, ``/proc``, ``/sys``);
it blocks, so callers run it through the blocking runner. Everything else is pure:
:func:`host_stats` turns the last two :class:`HostSample` objects into the ``Host.getStats``
dict with VDSM's names and typing (``docs/wire-shapes.md``), and :class:`HostStatsSampler`
keeps that two-sample window.

CPU percentages of the whole host come from the deltas of the CPU time counters (jiffies, as
seconds in psutil); with no previous sample every rate is zero and ``cpuIdle`` is 100. The
agent's own ``cpuUserVdsmd``/``cpuSysVdsmd`` are percent of one CPU, as VDSM reports them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..config import DEFAULT_STATE_DIR

_MIB = 1024 * 1024
_DEFAULT_DISK_PATHS = ("/tmp", "/var/log", DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time counters in seconds (``/proc/stat``; guest time is inside ``user``)."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0

    @property
    def busy_user(self) -> float:
        """Time in user mode, niced included."""
        return self.user + self.nice

    @property
    def busy_system(self) -> float:
        """Time in the kernel, interrupts included."""
        return self.system + self.irq + self.softirq

    @property
    def total(self) -> float:
        """All time counted."""
        return (
            self.user + self.nice + self.system + self.idle + self.iowait
            + self.irq + self.softirq + self.steal
        )  # fmt: skip


@dataclass(frozen=True)
class MemorySample:
    """Host memory in bytes; ``cached`` excludes ``sreclaimable`` (reclaimable slab)."""

    total: int
    free: int
    cached: int
    buffers: int
    sreclaimable: int
    swap_total: int
    swap_free: int

    @property
    def available(self) -> int:
        """VDSM's "available": Free + Cached + Buffers + SReclaimable."""
        return self.free + self.cached + self.buffers + self.sreclaimable


@dataclass(frozen=True)
class NicSample:
    """One network interface: cumulative counters, speed (Mb/s, 0 unknown) and link state."""

    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    speed: int
    is_up: bool


@dataclass(frozen=True)
class HostSample:
    """
    One reading of the host.

    :ivar timestamp: wall-clock time of the sample (epoch seconds).
    :ivar monotonic: monotonic time of the sample; intervals are measured with it.
    :ivar cpu: the whole host's CPU times; ``per_cpu`` each logical CPU's, by index.
    :ivar agent_cpu: the agent process's ``(user, system)`` CPU seconds.
    :ivar disk_free: free bytes per watched path (paths that could not be read are absent).
    :ivar load_avg: the 1, 5 and 15 minute load averages.
    :ivar boot_time: when the host booted (epoch seconds).
    :ivar numa: ``{node: (total bytes, free bytes)}`` from ``/sys``; empty when not there.
    :ivar cpu_nodes: ``{cpu index: NUMA node}``; CPUs not listed are on node 0.
    :ivar thp_state: the selected transparent huge page mode (``always``/``madvise``/``never``).
    """

    timestamp: float
    monotonic: float
    cpu: CpuTimes
    per_cpu: tuple[CpuTimes, ...]
    agent_cpu: tuple[float, float]
    memory: MemorySample
    nics: dict[str, NicSample]
    disk_free: dict[str, int]
    load_avg: tuple[float, float, float]
    boot_time: float
    numa: dict[int, tuple[int, int]] = field(default_factory=dict)
    cpu_nodes: dict[int, int] = field(default_factory=dict)
    thp_state: str = ""


@dataclass(frozen=True)
class VmCounts:
    """VM counts for ``Host.getStats``; ``mem_committed_mib`` feeds ``memCommitted``."""

    vm_count: int = 0
    vm_active: int = 0
    vm_migrating: int = 0
    incoming: int = 0
    outgoing: int = 0
    mem_committed_mib: int = 0


# -- sampling (blocking I/O) ------------------------------------------------------------------


def take_host_sample(
    *,
    proc: Any = psutil,
    disk_paths: Iterable[str] = _DEFAULT_DISK_PATHS,
    agent_pid: int | None = None,
    now: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    root: str = "/",
) -> HostSample:
    """
    Read the host's counters. BLOCKING: run it on a worker thread.

    :param proc: the psutil module (or a stand-in with the same functions).
    :param disk_paths: paths whose file system's free space to report.
    :param agent_pid: the agent's process id (default: ``os.getpid()`` at call time).
    :param root: where ``/proc`` and ``/sys`` are found (tests point it at a fake tree).
    :returns: a :class:`HostSample`.
    :raises psutil.Error: if psutil cannot read the basic CPU or memory counters.
    """
    agent = proc.Process(os.getpid() if agent_pid is None else agent_pid).cpu_times()
    numa, cpu_nodes = _read_numa(root)
    return HostSample(
        timestamp=now(),
        monotonic=monotonic(),
        cpu=_cpu_times(proc.cpu_times()),
        per_cpu=tuple(_cpu_times(c) for c in proc.cpu_times(percpu=True)),
        agent_cpu=(float(agent.user), float(agent.system)),
        memory=_memory(proc, root),
        nics=_nics(proc),
        disk_free=_disk_free(proc, disk_paths),
        load_avg=_load_avg(proc),
        boot_time=float(proc.boot_time()),
        numa=numa,
        cpu_nodes=cpu_nodes,
        thp_state=_thp_state(root),
    )


def _load_avg(proc: Any) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = proc.getloadavg()
    return float(one), float(five), float(fifteen)


def _cpu_times(raw: Any) -> CpuTimes:
    """A :class:`CpuTimes` from psutil's ``scputimes`` (fields other platforms lack are 0)."""
    get = lambda name: float(getattr(raw, name, 0.0) or 0.0)  # noqa: E731
    return CpuTimes(
        user=get("user"), nice=get("nice"), system=get("system"), idle=get("idle"),
        iowait=get("iowait"), irq=get("irq"), softirq=get("softirq"), steal=get("steal"),
    )  # fmt: skip


def _memory(proc: Any, root: str) -> MemorySample:
    """Memory from ``/proc/meminfo`` when readable, else from psutil."""
    vm, swap = proc.virtual_memory(), proc.swap_memory()
    info = _read_meminfo(os.path.join(root, "proc", "meminfo"))
    if {"MemTotal", "MemFree", "Cached", "Buffers"} <= info.keys():
        total, free = info["MemTotal"], info["MemFree"]
        cached, buffers = info["Cached"], info["Buffers"]
        reclaimable = info.get("SReclaimable", 0)
    else:  # psutil's "cached" already holds the reclaimable slab on Linux
        total, free = vm.total, vm.free
        cached, buffers = getattr(vm, "cached", 0), getattr(vm, "buffers", 0)
        reclaimable = 0
    return MemorySample(
        total=total, free=free, cached=cached, buffers=buffers, sreclaimable=reclaimable,
        swap_total=int(swap.total), swap_free=int(swap.free),
    )  # fmt: skip


def _read_meminfo(path: str) -> dict[str, int]:
    """``/proc/meminfo``-style ``Key: n kB`` lines as bytes; ``{}`` if unreadable."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    values: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        names, parts = key.split(), rest.split()  # per-node files say "Node 0 MemFree:"
        if names and parts and parts[0].isdigit():
            factor = 1024 if parts[1:] == ["kB"] else 1
            values[names[-1]] = int(parts[0]) * factor
    return values


def _nics(proc: Any) -> dict[str, NicSample]:
    """Counters and link state of every interface psutil knows."""
    counters = proc.net_io_counters(pernic=True) or {}
    states = proc.net_if_stats() or {}
    nics = {}
    for name, c in counters.items():
        st = states.get(name)
        nics[name] = NicSample(
            rx_bytes=c.bytes_recv, tx_bytes=c.bytes_sent, rx_errors=c.errin, tx_errors=c.errout,
            rx_dropped=c.dropin, tx_dropped=c.dropout,
            speed=int(st.speed) if st is not None else 0,
            is_up=bool(st.isup) if st is not None else False,
        )  # fmt: skip
    return nics


def _disk_free(proc: Any, paths: Iterable[str]) -> dict[str, int]:
    """Free bytes per path; paths that do not exist or cannot be read are left out."""
    free = {}
    for path in paths:
        try:
            free[path] = int(proc.disk_usage(path).free)
        except OSError:
            continue
    return free


def _read_numa(root: str) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
    """``({node: (total, free) bytes}, {cpu: node})`` from ``/sys/devices/system/node``."""
    base = os.path.join(root, "sys", "devices", "system", "node")
    try:
        names = os.listdir(base)
    except OSError:
        return {}, {}
    memory, cpu_nodes = {}, {}
    for name in names:
        if not (name.startswith("node") and name[4:].isdigit()):
            continue
        node = int(name[4:])
        info = _read_meminfo(os.path.join(base, name, "meminfo"))
        if "MemTotal" in info and "MemFree" in info:
            memory[node] = (info["MemTotal"], info["MemFree"])
        for cpu in parse_cpu_list(read_text(os.path.join(base, name, "cpulist"))):
            cpu_nodes[cpu] = node
    return memory, cpu_nodes


def parse_cpu_list(text: str) -> list[int]:
    """
    Parse a kernel CPU list such as ``"0-3,8,10-11"``.

    :returns: the CPU indices; ``[]`` for empty or malformed text.
    """
    cpus: list[int] = []
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _thp_state(root: str) -> str:
    """The bracketed choice in ``.../transparent_hugepage/enabled``, ``""`` if unreadable."""
    text = read_text(os.path.join(root, "sys", "kernel", "mm", "transparent_hugepage", "enabled"))
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return ""


def read_text(path: str) -> str:
    """A small file's text, ``""`` when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""


# -- HostStats (pure) -------------------------------------------------------------------------


def host_stats(
    prev: HostSample | None,
    cur: HostSample,
    *,
    vm_counts: VmCounts,
    agent_started: float,
    mom: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """
    VDSM's ``HostStats`` from two samples (pure).

    :param prev: the sample before ``cur``, or ``None``: rates are then 0 and ``cpuIdle`` 100.
    :param cur: the latest sample.
    :param vm_counts: the VM counts (and committed memory) to report.
    :param agent_started: when the agent started (epoch seconds), for ``elapsedTime``.
    :param mom: MOM's view, or ``None`` when MOM is off (``momStatus`` "disabled", KSM off).
        Either wire names (``momStatus``, ``ksmState``, ``ksmPages``, ``ksmCpu``,
        ``ksmMergeAcrossNodes``, ``memShared`` MiB) or MOM host statistics (``ksm_run``,
        ``ksm_pages_to_scan``, ``ksmd_cpu_usage``, ``ksm_merge_across_nodes``,
        ``ksm_pages_sharing``); wire names win.
    :returns: the ``Host.getStats`` dict, typed as ``docs/wire-shapes.md`` says.
    """
    interval = _interval(prev, cur)
    before = prev if interval else None
    stats: dict[str, Any] = {}
    stats.update(_cpu_stats(before, cur))
    stats.update(_agent_cpu_stats(before, cur, interval))
    stats["cpuLoad"] = f"{cur.load_avg[1]:.2f}"
    stats["cpuStatistics"] = _per_cpu_stats(before, cur)
    stats.update(_memory_stats(cur.memory, vm_counts.mem_committed_mib))
    stats.update(mom_fields(mom))
    stats.update(_vm_count_stats(vm_counts))
    stats["network"] = _network_stats(cur)
    stats["diskStats"] = {path: {"free": str(free // _MIB)} for path, free in cur.disk_free.items()}
    stats["elapsedTime"] = max(0, int(cur.timestamp - agent_started))
    stats["bootTime"] = int(cur.boot_time)
    stats["dateTime"] = time.strftime("%Y-%m-%dT%H:%M:%S GMT", time.gmtime(cur.timestamp))
    stats["numaNodeMemFree"] = _numa_stats(cur)
    stats["thpState"] = cur.thp_state
    return stats


def _interval(prev: HostSample | None, cur: HostSample) -> float:
    """Seconds between the samples; 0 when there is no usable previous sample."""
    if prev is None:
        return 0.0
    return max(0.0, cur.monotonic - prev.monotonic)


def _percentages(prev: CpuTimes | None, cur: CpuTimes) -> tuple[float, float, float]:
    """``(user, system, idle)`` percent of the time between two CPU counters."""
    if prev is None:
        return 0.0, 0.0, 100.0
    total = cur.total - prev.total
    if total <= 0:
        return 0.0, 0.0, 100.0
    user = min(100.0, 100.0 * max(0.0, cur.busy_user - prev.busy_user) / total)
    system = min(100.0 - user, 100.0 * max(0.0, cur.busy_system - prev.busy_system) / total)
    return round(user, 2), round(system, 2), round(max(0.0, 100.0 - user - system), 2)


def _cpu_stats(prev: HostSample | None, cur: HostSample) -> dict[str, float]:
    """``cpuUser``, ``cpuSys``, ``cpuIdle``: percent of the whole host."""
    user, system, idle = _percentages(prev.cpu if prev else None, cur.cpu)
    return {"cpuUser": user, "cpuSys": system, "cpuIdle": idle}


def _agent_cpu_stats(prev: HostSample | None, cur: HostSample, interval: float) -> dict:
    """``cpuUserVdsmd``, ``cpuSysVdsmd``: the agent's percent of one CPU."""
    if prev is None or interval <= 0:
        return {"cpuUserVdsmd": 0.0, "cpuSysVdsmd": 0.0}
    user = max(0.0, cur.agent_cpu[0] - prev.agent_cpu[0])
    system = max(0.0, cur.agent_cpu[1] - prev.agent_cpu[1])
    return {
        "cpuUserVdsmd": round(100.0 * user / interval, 2),
        "cpuSysVdsmd": round(100.0 * system / interval, 2),
    }


def _per_cpu_stats(prev: HostSample | None, cur: HostSample) -> dict[str, dict[str, Any]]:
    """``cpuStatistics``: each logical CPU's percentages and NUMA node, keyed by index."""
    before = prev.per_cpu if prev is not None and len(prev.per_cpu) == len(cur.per_cpu) else None
    result = {}
    for index, times in enumerate(cur.per_cpu):
        user, system, idle = _percentages(before[index] if before else None, times)
        result[str(index)] = {
            "nodeIndex": cur.cpu_nodes.get(index, 0),
            "cpuUser": user,
            "cpuSys": system,
            "cpuIdle": idle,
        }
    return result


def _memory_stats(mem: MemorySample, committed_mib: int) -> dict[str, int]:
    """Memory and swap in MiB, ``memUsed`` in percent (VDSM's "available" formula)."""
    available = min(mem.available, mem.total)
    free_mib = available // _MIB
    used = 100 - (100 * available // mem.total) if mem.total > 0 else 0
    return {
        "memUsed": int(min(100, max(0, used))),
        "memFree": free_mib,
        "memAvailable": free_mib - committed_mib,
        "memCommitted": max(0, committed_mib),
        "swapTotal": mem.swap_total // _MIB,
        "swapFree": mem.swap_free // _MIB,
    }


def mom_fields(mom: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    ``momStatus``, ``memShared`` and the KSM fields from MOM's view (pure).

    :param mom: as for :func:`host_stats`; ``None`` means MOM is disabled.
    :returns: the six fields, typed for the wire; bad values fall back to the defaults.
    """
    mom = mom or {}
    page = 4096
    shared_pages = _number(mom.get("ksm_pages_sharing"), int, 0)
    status = mom.get("momStatus", "active" if mom else "disabled")
    return {
        "momStatus": status if status in ("active", "inactive", "disabled") else "inactive",
        "memShared": max(0, _number(mom.get("memShared"), int, shared_pages * page // _MIB)),
        "ksmState": bool(mom.get("ksmState", mom.get("ksm_run", False))),
        "ksmPages": max(0, _number(mom.get("ksmPages", mom.get("ksm_pages_to_scan")), int, 0)),
        "ksmCpu": max(0.0, _number(mom.get("ksmCpu", mom.get("ksmd_cpu_usage")), float, 0.0)),
        "ksmMergeAcrossNodes": bool(
            mom.get("ksmMergeAcrossNodes", mom.get("ksm_merge_across_nodes", False))
        ),
    }


def _number(value: Any, kind: type, default: Any) -> Any:
    """``kind(value)``, or ``default`` when that fails."""
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _vm_count_stats(counts: VmCounts) -> dict[str, int]:
    """The VM count fields."""
    return {
        "vmCount": counts.vm_count,
        "vmActive": counts.vm_active,
        "vmMigrating": counts.vm_migrating,
        "incomingVmMigrations": counts.incoming,
        "outgoingVmMigrations": counts.outgoing,
    }


def _network_stats(cur: HostSample) -> dict[str, dict[str, Any]]:
    """Per-interface cumulative counters (strings), speed, link state and sample time."""
    return {
        name: {
            "rx": str(nic.rx_bytes),
            "tx": str(nic.tx_bytes),
            "rxDropped": str(nic.rx_dropped),
            "txDropped": str(nic.tx_dropped),
            "rxErrors": str(nic.rx_errors),
            "txErrors": str(nic.tx_errors),
            "speed": str(max(0, nic.speed)),
            "state": "up" if nic.is_up else "down",
            "sampleTime": float(cur.timestamp),
        }
        for name, nic in cur.nics.items()
    }


def _numa_stats(cur: HostSample) -> dict[str, dict[str, int]]:
    """Free MiB and used percent per NUMA node; one node 0 for the whole host without /sys."""
    nodes = cur.numa or {0: (cur.memory.total, min(cur.memory.available, cur.memory.total))}
    result = {}
    for node, (total, free) in sorted(nodes.items()):
        used = 100 - (100 * free // total) if total > 0 else 0
        result[str(node)] = {"memFree": free // _MIB, "memPercent": int(min(100, max(0, used)))}
    return result


class HostStatsSampler:
    """The last two host samples, and ``HostStats`` from them (pure: no threads, no I/O)."""

    def __init__(self) -> None:
        self._prev: HostSample | None = None
        self._cur: HostSample | None = None

    @property
    def latest(self) -> HostSample | None:
        """The newest sample, or ``None`` before the first."""
        return self._cur

    def update(self, sample: HostSample) -> None:
        """Add a sample; the one before it becomes the previous one."""
        self._prev, self._cur = self._cur, sample

    def stats(
        self,
        vm_counts: VmCounts,
        *,
        agent_started: float,
        mom: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """
        ``HostStats`` from the last two samples (see :func:`host_stats`).

        :raises LookupError: before the first :meth:`update`.
        """
        if self._cur is None:
            raise LookupError("no host sample has been taken yet")
        return host_stats(
            self._prev, self._cur, vm_counts=vm_counts, agent_started=agent_started, mom=mom
        )
