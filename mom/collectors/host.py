"""Host collectors: memory (``/proc/meminfo``, ``/proc/vmstat``), KSM (its sysfs tree) and CPUs.

Each collector has ``fields`` (mandatory: without them no sample is stored), ``optional``
(missing ones read as ``None``) and ``collect() -> dict``. They read files, so they run on the
MOM policy thread, never on the reactor. The roots are parameters so that tests use fake trees.
Parsing is separated into pure functions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import psutil

#: KSM's sysfs files MOM reads, each reported as ``ksm_<name>``.
KSM_FILES = (
    "full_scans",
    "pages_sharing",
    "pages_unshared",
    "run",
    "pages_shared",
    "pages_to_scan",
    "pages_volatile",
    "sleep_millisecs",
    "merge_across_nodes",
)
DEFAULT_KSM_ROOT = "/sys/kernel/mm/ksm"


class CollectionError(Exception):
    """A sample could not be taken this time (logged; the next cycle tries again)."""


def parse_meminfo(text: str) -> dict[str, int]:
    """:returns: ``/proc/meminfo`` as ``{"MemTotal": kib, ...}``."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            values[name.strip()] = int(words[0])
    return values


def parse_vmstat(text: str) -> dict[str, int]:
    """:returns: ``/proc/vmstat`` as ``{"pswpin": n, ...}``."""
    values = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].lstrip("-").isdigit():
            values[words[0]] = int(words[1])
    return values


def memory_fields(
    meminfo: Mapping[str, int], vmstat: Mapping[str, int], previous: Mapping[str, int] | None
) -> dict[str, int]:
    """
    MOM's host memory fields (KiB), as its HostMemory collector computes them.

    ``mem_available`` is the total RAM (MemTotal), as in MOM, not the kernel's MemAvailable.

    :param previous: the ``vmstat`` of the previous sample, for the swap rates; ``None`` at first.
    :raises CollectionError: when meminfo lacks a field MOM needs.
    """
    try:
        total, free = meminfo["MemTotal"], meminfo["MemFree"]
        cached = meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
        swap_total = meminfo.get("SwapTotal", 0)
        fields = {
            "mem_available": total,
            "mem_unused": free,
            "mem_free": free + cached,
            "anon_pages": meminfo.get("AnonPages", 0),
            "swap_total": swap_total,
            "swap_usage": swap_total - meminfo.get("SwapFree", swap_total),
        }
    except KeyError as e:
        raise CollectionError(f"/proc/meminfo has no {e.args[0]}") from None
    for field, counter in (("swap_in", "pswpin"), ("swap_out", "pswpout")):
        before = None if previous is None else previous.get(counter)
        now = vmstat.get(counter)
        fields[field] = 0 if before is None or now is None else max(0, now - before)
    return fields


class HostMemory:
    """MOM's HostMemory collector over a ``/proc`` tree."""

    fields = frozenset(
        {
            "mem_available",
            "mem_unused",
            "mem_free",
            "swap_in",
            "swap_out",
            "anon_pages",
            "swap_total",
            "swap_usage",
        }
    )
    optional: frozenset[str] = frozenset()

    def __init__(self, proc_root: str = "/proc") -> None:
        self._proc = proc_root
        self._previous: dict[str, int] | None = None

    def collect(self) -> dict[str, int]:
        """:raises CollectionError: when /proc cannot be read."""
        try:
            meminfo = parse_meminfo(_read(os.path.join(self._proc, "meminfo")))
            vmstat = parse_vmstat(_read(os.path.join(self._proc, "vmstat")))
        except OSError as e:
            raise CollectionError(f"cannot read host memory: {e}") from None
        fields = memory_fields(meminfo, vmstat, self._previous)
        self._previous = vmstat
        return fields


class HostCpu:
    """MOM's HostCpu collector: ``cpu_count``, the number of ``processor`` lines."""

    fields = frozenset({"cpu_count"})
    optional: frozenset[str] = frozenset()

    def __init__(self, proc_root: str = "/proc") -> None:
        self._proc = proc_root

    def collect(self) -> dict[str, int]:
        """:raises CollectionError: when cpuinfo cannot be read."""
        try:
            text = _read(os.path.join(self._proc, "cpuinfo"))
        except OSError as e:
            raise CollectionError(f"cannot read cpuinfo: {e}") from None
        return {"cpu_count": sum(1 for line in text.splitlines() if line.startswith("processor"))}


class HostKsm:
    """
    MOM's HostKSM collector: the sysfs counters, ``ksm_shareable`` (KiB of QEMU processes'
    virtual size) and ``ksmd_cpu_usage`` (percent of one CPU ksmd used since the last sample).

    A host without KSM (no sysfs tree) reports nothing, and its KSM fields are optional, so
    that MOM still balloons there; MOM itself would stop its host monitor.
    """

    def __init__(self, ksm_root: str = DEFAULT_KSM_ROOT, *, process_names=("qemu",)) -> None:
        self._root = ksm_root
        self._names = tuple(process_names)
        self._ksmd: psutil.Process | None = None
        self._ksmd_cpu: tuple[float, float] | None = None
        names = {f"ksm_{name}" for name in KSM_FILES} | {"ksm_shareable", "ksmd_cpu_usage"}
        if os.path.isdir(ksm_root):
            self.fields, self.optional = frozenset(names), frozenset()
        else:
            self.fields, self.optional = frozenset(), frozenset(names)

    @property
    def available(self) -> bool:
        """Whether this host has KSM (the sysfs tree existed at start)."""
        return bool(self.fields)

    def collect(self) -> dict[str, float | int]:
        """:raises CollectionError: when a KSM file cannot be read or parsed."""
        if not self.available:
            return {}
        values: dict[str, float | int] = {}
        for name in KSM_FILES:
            path = os.path.join(self._root, name)
            try:
                values[f"ksm_{name}"] = int(_read(path).strip())
            except (OSError, ValueError) as e:
                raise CollectionError(f"cannot read {path}: {e}") from None
        values["ksm_shareable"] = self._shareable()
        values["ksmd_cpu_usage"] = self._ksmd_usage()
        return values

    def _shareable(self) -> int:
        total = 0
        for proc in psutil.process_iter(["name", "memory_info"]):
            name = proc.info.get("name") or ""
            memory = proc.info.get("memory_info")
            if memory is not None and name.startswith(self._names):
                total += memory.vms // 1024
        return total

    def _ksmd_usage(self) -> float:
        try:
            if self._ksmd is None or not self._ksmd.is_running():
                self._ksmd = next(
                    (p for p in psutil.process_iter(["name"]) if p.info["name"] == "ksmd"), None
                )
            if self._ksmd is None:
                return 0.0
            times = self._ksmd.cpu_times()
        except psutil.Error:
            self._ksmd = None
            return 0.0
        now = (time.monotonic(), times.user + times.system)
        before, self._ksmd_cpu = self._ksmd_cpu, now
        if before is None or now[0] <= before[0]:
            return 0.0
        return round(100.0 * (now[1] - before[1]) / (now[0] - before[0]), 2)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
