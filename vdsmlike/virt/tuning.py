"""libvirt's rules for vCPU bandwidth and block IO throttling, for adapters that must emulate them.

Pure. What the QEMU driver (libvirt 9.0) does, as seen on a real guest:

- ``setSchedulerParameters({'vcpu_quota': q, 'vcpu_period': p})``: a quota of 0 and a period of
  0 leave the value as it is; any negative quota means unlimited and reads back as -1; otherwise
  the quota must be in 1000-17592186044415 and the period in 1000-1000000 ("value of
  'vcpu_quota' is out of range [1000, 17592186044415]"). A negative period never reaches libvirt:
  the Python binding refuses it (``OverflowError``), which adapters report as a refusal too.
- ``setBlockIoTune(disk, {...})``: every limit is at most 10**15 ("block I/O throttle limit value
  must be no more than 1000000000000000"), and a non-zero total limit cannot be set with a
  non-zero read or write limit of the same unit ("total and read/write of bytes_sec cannot be
  set at the same time").

:class:`~vdsmlike.virt.memory.MemoryHypervisor` applies all of these; the libvirt adapter applies
the CPU ones for the test driver, which has no vCPU bandwidth at all (its scheduler is "fair",
with one ``weight`` parameter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .errors import HypervisorError
from .events import CpuTune

#: The block IO limits VDSM and MOM use, in libvirt's names (bytes/s and operations/s).
IO_TUNE_KEYS = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
)
#: The largest block IO limit libvirt accepts.
MAX_IO_TUNE = 10**15
QUOTA_RANGE = (1000, 17_592_186_044_415)
PERIOD_RANGE = (1000, 1_000_000)


def apply_cpu_tune(current: CpuTune, quota: int | None, period: int | None) -> CpuTune:
    """
    The vCPU bandwidth after setting ``quota`` and ``period`` (None: not given), as libvirt does.

    :raises HypervisorError: for a value libvirt refuses; nothing changes then.
    """
    changes: dict[str, int] = {}
    if quota is not None:
        quota = _whole(quota, "vcpu_quota")
        if quota < 0:
            changes["quota"] = -1
        elif quota:
            changes["quota"] = _in_range(quota, "vcpu_quota", QUOTA_RANGE)
    if period is not None:
        period = _whole(period, "vcpu_period")
        if period < 0:
            raise HypervisorError("can't convert negative int to unsigned")
        if period:
            changes["period"] = _in_range(period, "vcpu_period", PERIOD_RANGE)
    return replace(current, **changes)


def io_tune_limits(values: Mapping[str, Any]) -> dict[str, int]:
    """
    The six limits a disk gets from ``values``: the keys given, and 0 (no limit) for the others.

    :raises HypervisorError: for an unknown key, or a value that is not a whole number or is
        negative (what the Python binding itself refuses before libvirt sees it).
    """
    unknown = sorted(set(values) - set(IO_TUNE_KEYS))
    if unknown:
        raise HypervisorError(f"invalid argument: unknown block IO tune parameter {unknown[0]!r}")
    limits = {key: _whole(values.get(key, 0), key) for key in IO_TUNE_KEYS}
    if any(value < 0 for value in limits.values()):
        raise HypervisorError("can't convert negative int to unsigned")
    return limits


def block_io_tune(values: Mapping[str, Any]) -> dict[str, int]:
    """
    :func:`io_tune_limits`, checked as libvirt checks them.

    :raises HypervisorError: as :func:`io_tune_limits`, and for a value above
        :data:`MAX_IO_TUNE` or a total limit set together with a read or write one.
    """
    limits = io_tune_limits(values)
    if any(value > MAX_IO_TUNE for value in limits.values()):
        raise HypervisorError(
            "argument unsupported: block I/O throttle limit value must be no more than "
            f"{MAX_IO_TUNE}"
        )
    for unit in ("bytes_sec", "iops_sec"):
        if limits[f"total_{unit}"] and (limits[f"read_{unit}"] or limits[f"write_{unit}"]):
            raise HypervisorError(
                f"invalid argument: total and read/write of {unit} cannot be set at the same time"
            )
    return limits


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HypervisorError(f"invalid argument: {name} must be an integer, got {value!r}")
    return value


def _in_range(value: int, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise HypervisorError(
            f"invalid argument: value of '{name}' is out of range [{low}, {high}]"
        )
    return value
