"""Pure: the sampled fields of VDSM's ``VmStats`` from two libvirt bulk samples of one VM.

A sample is the flat dict ``virConnectGetAllDomainStats`` returns for a domain (``cpu.time``,
``balloon.current``, ``block.0.rd.bytes``, ``net.0.tx.pkts``, ...). Any key may be missing: the
test driver reports only ``state.*`` plus what the adapter fills from ``dom.info()``, and a guest
without a balloon driver reports no guest memory figures. Nothing here raises on odd input: a
missing or non-numeric counter leaves its field at zero or out, and a counter that went down
(wrap or reset) gives a rate of zero.

Numbers are strings, as VDSM sends them (``docs/wire-shapes.md``). CPU percentages are of one
CPU over the interval: ``100 * Δns / interval / 1e9``. ``cpuUser`` is ``cpu.user`` and
``cpuSys`` is ``cpu.system`` when libvirt reports both; otherwise all of ``cpu.time`` counts as
user time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

_NS_PER_S = 1e9
#: Defaults for the CPU tuning fields MOM reads, when the caller knows none.
DEFAULT_CPU_TUNE = {"vcpuQuota": "-1", "vcpuPeriod": "100000", "vcpuUserLimit": "100"}
#: Reported speed (Mb/s) and link state of a guest interface, as VDSM reports them.
GUEST_NIC_SPEED = "1000"
GUEST_NIC_STATE = "unknown"
#: balloon stat key → (memoryStats key, per second?)
_GUEST_MEMORY = {
    "balloon.available": ("mem_total", False),
    "balloon.unused": ("mem_unused", False),
    "balloon.disk_caches": ("mem_cached", False),
    "balloon.swap_in": ("swap_in", True),
    "balloon.swap_out": ("swap_out", True),
    "balloon.major_fault": ("majflt", True),
    "balloon.minor_fault": ("minflt", True),
}

Sample = Mapping[str, Any]


def sampled_vm_stats(
    prev: Sample | None,
    cur: Sample | None,
    *,
    prev_time: float | None,
    cur_time: float | None,
    balloon_target: int | None,
    ballooning_enabled: bool,
    interfaces: Mapping[str, Mapping[str, str]] | None = None,
    cpu_tune: Mapping[str, Any] | None = None,
    io_tune: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """
    The sampled ``VmStats`` fields of one VM.

    :param prev: the sample before ``cur`` (``None`` if there is none yet).
    :param cur: the latest sample; ``None`` (no sample yet) gives ``{}``.
    :param prev_time: when ``prev`` was taken (monotonic seconds); ``cur_time`` likewise.
    :param balloon_target: the balloon target in KiB, ``None`` while unknown (``balloonInfo``
        is then ``{}``, so that MOM skips the VM).
    :param ballooning_enabled: reported in ``balloonInfo``.
    :param interfaces: ``{libvirt target dev: {"macAddr": ..., "name": ...}}`` for ``network``.
    :param cpu_tune: ``vcpuQuota``, ``vcpuPeriod``, ``vcpuUserLimit`` if known (see
        :data:`DEFAULT_CPU_TUNE`).
    :param io_tune: the disks' current limits, ``[{name, path, ioTune: {key: int}}]``; given,
        they are reported as ``ioTune`` (entries that are not of that shape are left out).
    :returns: the fields: ``cpuUser``, ``cpuSys``, ``cpuUsage``, ``cpuActual``, ``vcpuCount``
        and the tuning fields, ``memUsage``, ``memoryStats``, ``balloonInfo``, ``disks``,
        ``network``, and ``ioTune`` when ``io_tune`` is given.
    """
    if not isinstance(cur, Mapping):
        return {}
    interval = _interval(prev_time, cur_time)
    before = prev if isinstance(prev, Mapping) and interval is not None else None
    stats: dict[str, Any] = {}
    stats.update(_cpu(before, cur, interval))
    stats.update(_vcpu(cur, cpu_tune))
    stats.update(_memory(before, cur, interval))
    stats["balloonInfo"] = balloon_info(cur, balloon_target, ballooning_enabled)
    stats["disks"] = _disks(before, cur, interval)
    stats["network"] = _network(cur, cur_time, interfaces)
    if io_tune is not None:
        stats["ioTune"] = _io_tune(io_tune)
    return stats


# -- reading counters -------------------------------------------------------------------------


def _int(stats: Sample | None, key: str) -> int | None:
    """``stats[key]`` as an int; ``None`` when missing or not a finite number."""
    if stats is None:
        return None
    value = stats.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return int(number)


def _delta(prev: Sample | None, cur: Sample, key: str) -> int | None:
    """How much a counter grew; 0 if it went down (wrap, reset); ``None`` if either is missing."""
    old, new = _int(prev, key), _int(cur, key)
    if old is None or new is None:
        return None
    return max(0, new - old)


def _interval(prev_time: Any, cur_time: Any) -> float | None:
    """Seconds between the samples, ``None`` unless both times are known and in order."""
    try:
        interval = float(cur_time) - float(prev_time)
    except (TypeError, ValueError):
        return None
    return interval if math.isfinite(interval) and interval > 0 else None


def _rate(delta: int | None, interval: float | None) -> float:
    """Per second; 0 without two samples."""
    if delta is None or interval is None:
        return 0.0
    return delta / interval


# -- CPU and vCPUs ----------------------------------------------------------------------------


def _cpu(prev: Sample | None, cur: Sample, interval: float | None) -> dict[str, Any]:
    """``cpuUser``, ``cpuSys`` (percent of one CPU), ``cpuUsage`` (ns), ``cpuActual``."""
    out: dict[str, Any] = {"cpuUser": "0.00", "cpuSys": "0.00", "cpuActual": False}
    usage = _int(cur, "cpu.time")
    user, system = _int(cur, "cpu.user"), _int(cur, "cpu.system")
    if usage is None and user is not None and system is not None:
        usage = user + system
    if usage is not None:
        out["cpuUsage"] = str(max(0, usage))
    if prev is None or interval is None:
        return out
    user_ns, system_ns = _delta(prev, cur, "cpu.user"), _delta(prev, cur, "cpu.system")
    if user_ns is None or system_ns is None:
        user_ns, system_ns = _delta(prev, cur, "cpu.time"), 0
    if user_ns is None:
        return out
    out["cpuUser"] = f"{100.0 * user_ns / interval / _NS_PER_S:.2f}"
    out["cpuSys"] = f"{100.0 * system_ns / interval / _NS_PER_S:.2f}"
    out["cpuActual"] = True
    return out


def _vcpu(cur: Sample, cpu_tune: Mapping[str, Any] | None) -> dict[str, str]:
    """``vcpuCount`` (when known) and the CPU tuning fields MOM reads."""
    out = dict(DEFAULT_CPU_TUNE)
    tune = cpu_tune if isinstance(cpu_tune, Mapping) else {}
    for key in DEFAULT_CPU_TUNE:
        value = _int(tune, key)
        if value is not None:
            out[key] = str(value)
    count = _int(cur, "vcpu.current")
    if count is not None:
        out["vcpuCount"] = str(count)
    return out


def _io_tune(entries: Any) -> list[dict[str, Any]]:
    """``ioTune``: each disk's name, path and limits (non-negative ints), as VDSM reports them."""
    result = []
    for entry in entries if isinstance(entries, Sequence) else ():
        limits = entry.get("ioTune") if isinstance(entry, Mapping) else None
        if not isinstance(limits, Mapping) or not isinstance(entry.get("name"), str):
            continue
        values = {key: _int(limits, key) for key in limits if isinstance(key, str)}
        result.append(
            {
                "name": entry["name"],
                "path": str(entry.get("path") or ""),
                "ioTune": {k: v for k, v in values.items() if v is not None and v >= 0},
            }
        )
    return result


# -- memory and balloon -----------------------------------------------------------------------


def _memory(prev: Sample | None, cur: Sample, interval: float | None) -> dict[str, Any]:
    """``memUsage`` (percent used) and ``memoryStats`` (KiB; swap and faults per second)."""
    return {"memUsage": _mem_usage(cur), "memoryStats": _memory_stats(prev, cur, interval)}


def _mem_usage(cur: Sample) -> str:
    """Percent of guest memory in use: ``100 - (usable or unused) / available``; "0" unknown."""
    available = _int(cur, "balloon.available")
    free = _int(cur, "balloon.usable")
    if free is None:
        free = _int(cur, "balloon.unused")
    if not available or available <= 0 or free is None:
        return "0"
    return str(min(100, max(0, 100 - free * 100 // available)))


def _memory_stats(prev: Sample | None, cur: Sample, interval: float | None) -> dict[str, str]:
    """The guest's memory figures; ``{}`` when the guest reports none (no balloon driver)."""
    stats: dict[str, str] = {}
    for key, (name, per_second) in _GUEST_MEMORY.items():
        value = _int(cur, key)
        if value is None:
            continue
        stats[name] = str(round(_rate(_delta(prev, cur, key), interval)) if per_second else value)
    if not stats:
        return stats
    usable = _int(cur, "balloon.usable")
    if usable is not None or "mem_unused" in stats:
        stats["mem_free"] = str(usable) if usable is not None else stats["mem_unused"]
    stats["mem_buffers"] = "0"
    if "majflt" in stats or "minflt" in stats:
        stats["pageflt"] = str(int(stats.get("majflt", "0")) + int(stats.get("minflt", "0")))
    return stats


def balloon_info(cur: Sample, balloon_target: Any, ballooning_enabled: bool) -> dict[str, Any]:
    """
    ``balloonInfo``: sizes in KiB as strings, or ``{}`` while the target is unknown.

    :param cur: the latest sample (``balloon.current``, ``balloon.maximum``).
    :param balloon_target: the target in KiB, or ``None``.
    :param ballooning_enabled: whether the balloon may be moved.
    """
    target = _int({"t": balloon_target}, "t")
    if target is None:
        return {}
    current = _int(cur, "balloon.current")
    current = current if current is not None else target
    maximum = _int(cur, "balloon.maximum")
    return {
        "balloon_max": str(maximum if maximum is not None else max(current, target)),
        "balloon_min": "0",
        "balloon_cur": str(current),
        "balloon_target": str(target),
        "ballooning_enabled": bool(ballooning_enabled),
    }


# -- devices ----------------------------------------------------------------------------------


def devices(stats: Sample | None, kind: str) -> dict[str, dict[str, Any]]:
    """
    Group ``<kind>.<i>.<field>`` keys by device name.

    :param kind: ``"block"`` or ``"net"``.
    :returns: ``{name: {field: value}}``; entries without a name are skipped, and for a name
        seen twice (a disk's backing chain) the lowest index wins.
    """
    by_index: dict[int, dict[str, Any]] = {}
    for key, value in (stats or {}).items():
        if not isinstance(key, str) or not key.startswith(kind + "."):
            continue
        index, _, suffix = key[len(kind) + 1 :].partition(".")
        if index.isdigit() and suffix:
            by_index.setdefault(int(index), {})[suffix] = value
    result: dict[str, dict[str, Any]] = {}
    for _index, values in sorted(by_index.items()):
        name = values.get("name")
        if isinstance(name, str) and name and name not in result:
            result[name] = values
    return result


def _disks(prev: Sample | None, cur: Sample, interval: float | None) -> dict[str, dict]:
    """Per disk: rates (B/s), latencies (ns), counters and sizes (B)."""
    before = devices(prev, "block") if prev is not None else {}
    return {
        name: _disk(before.get(name), values, interval)
        for name, values in devices(cur, "block").items()
    }


def _disk(prev: Sample | None, cur: Sample, interval: float | None) -> dict[str, str]:
    """One disk's ``VmDiskStats``."""
    physical, capacity = _int(cur, "physical"), _int(cur, "capacity")
    apparent = physical if physical is not None else (capacity or 0)
    allocation = _int(cur, "allocation")
    return {
        "readRate": f"{_rate(_delta(prev, cur, 'rd.bytes'), interval):.1f}",
        "writeRate": f"{_rate(_delta(prev, cur, 'wr.bytes'), interval):.1f}",
        "readLatency": _latency(prev, cur, "rd"),
        "writeLatency": _latency(prev, cur, "wr"),
        "flushLatency": _latency(prev, cur, "fl"),
        "readOps": str(_int(cur, "rd.reqs") or 0),
        "writeOps": str(_int(cur, "wr.reqs") or 0),
        "readBytes": str(_int(cur, "rd.bytes") or 0),
        "writtenBytes": str(_int(cur, "wr.bytes") or 0),
        "truesize": str(allocation if allocation is not None else apparent),
        "apparentsize": str(apparent),
        "imageID": "",
    }


def _latency(prev: Sample | None, cur: Sample, op: str) -> str:
    """Average ns per request of ``op`` over the interval; "0" without requests."""
    requests = _delta(prev, cur, f"{op}.reqs")
    spent = _delta(prev, cur, f"{op}.times")
    if not requests or spent is None:
        return "0"
    return str(spent // requests)


def _network(
    cur: Sample, cur_time: Any, interfaces: Mapping[str, Mapping[str, str]] | None
) -> dict[str, dict[str, Any]]:
    """Per guest interface: byte totals, errors, drops, speed, state, MAC and name."""
    known = interfaces if isinstance(interfaces, Mapping) else {}
    sample_time = _int({"t": cur_time}, "t")
    when = float(cur_time) if sample_time is not None else 0.0
    result = {}
    for name, values in devices(cur, "net").items():
        nic = known.get(name)
        nic = nic if isinstance(nic, Mapping) else {}
        result[name] = {
            "rx": str(_int(values, "rx.bytes") or 0),
            "tx": str(_int(values, "tx.bytes") or 0),
            "rxErrors": str(_int(values, "rx.errs") or 0),
            "rxDropped": str(_int(values, "rx.drop") or 0),
            "txErrors": str(_int(values, "tx.errs") or 0),
            "txDropped": str(_int(values, "tx.drop") or 0),
            "speed": GUEST_NIC_SPEED,
            "state": GUEST_NIC_STATE,
            "macAddr": str(nic.get("macAddr", "")),
            "name": str(nic.get("name", name)),
            "sampleTime": when,
        }
    return result
