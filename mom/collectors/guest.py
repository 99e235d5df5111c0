"""Guest collectors: MOM's guest fields from the agent's own VM statistics.

The embedded MOM reads what ``Host.getAllVmStats`` reports, as MOM's VDSM interface does, but
in-process. Only VMs that are Up are guests. Units are MOM's: KiB, microseconds, percent.
Pure: the policy thread fetches the statistics from the agent and calls these.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from vdsmlike.virt.tuning import IO_TUNE_KEYS

#: Guest fields without which a guest is left out of a cycle (VDSM's GuestCpuTune).
GUEST_FIELDS = frozenset({"vcpu_quota", "vcpu_period", "vcpu_user_limit", "vcpu_count"})
#: Fields reported when known (VDSM's GuestMemoryOptional, GuestBalloonOptional, IoTune).
GUEST_OPTIONAL = frozenset(
    {
        "mem_available",
        "mem_unused",
        "mem_free",
        "major_fault",
        "minor_fault",
        "swap_in",
        "swap_out",
        "swap_total",
        "swap_usage",
        "balloon_cur",
        "balloon_max",
        "balloon_min",
        "io_tune",
        "io_tune_current",
    }
)
_MEMORY = {
    "mem_total": "mem_available",
    "mem_unused": "mem_unused",
    "mem_free": "mem_free",
    "swap_in": "swap_in",
    "swap_out": "swap_out",
    "swap_total": "swap_total",
    "swap_usage": "swap_usage",
    "majflt": "major_fault",
}


def guest_properties(vm: Mapping[str, Any]) -> dict[str, Any]:
    """:returns: the guest's MOM properties: ``uuid``, ``name``, ``pid``."""
    return {"uuid": vm.get("vmId"), "name": vm.get("vmName", ""), "pid": vm.get("pid")}


def is_guest(vm: Mapping[str, Any]) -> bool:
    """:returns: whether MOM manages this VM: it is Up."""
    return vm.get("status") == "Up" and bool(vm.get("vmId"))


def guest_fields(
    vm: Mapping[str, Any], io_policy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """
    MOM's guest fields from one VM's stats (``Host.getAllVmStats`` item).

    :param io_policy: the VM's entry of ``Host.getAllVmIoTunePolicies`` (``policy`` and
        ``current_values``), or ``None``.
    :returns: the fields that could be read; missing ones are simply absent.
    """
    fields: dict[str, Any] = {}
    fields.update(_memory(vm))
    fields.update(_balloon(vm.get("balloonInfo") or {}))
    fields.update(_cpu_tune(vm))
    if io_policy:
        tunes = io_tunes(io_policy)
        fields["io_tune"] = tunes
        fields["io_tune_current"] = [copy.deepcopy(t.state()) for t in tunes]
    return fields


def _memory(vm: Mapping[str, Any]) -> dict[str, int]:
    stats = vm.get("memoryStats") or {}
    if _int(vm.get("memUsage")) in (None, 0) or not stats:
        return {}  # VDSM's interface: no usage figure means no guest memory data
    fields = {mom: _int(stats.get(ours)) for ours, mom in _MEMORY.items()}
    pageflt, majflt = _int(stats.get("pageflt")), _int(stats.get("majflt"))
    if pageflt is not None and majflt is not None:
        fields["minor_fault"] = pageflt - majflt
    return {k: v for k, v in fields.items() if v is not None}


def _balloon(info: Mapping[str, Any]) -> dict[str, int]:
    fields = {key: _int(info.get(key)) for key in ("balloon_cur", "balloon_max", "balloon_min")}
    return {k: v for k, v in fields.items() if v is not None}


def _cpu_tune(vm: Mapping[str, Any]) -> dict[str, int]:
    count = _int(vm.get("vcpuCount"))
    if count is None:
        return {}
    return {
        "vcpu_count": count,
        "vcpu_user_limit": _int(vm.get("vcpuUserLimit"), 100),
        "vcpu_quota": _int(vm.get("vcpuQuota"), 0),
        "vcpu_period": _int(vm.get("vcpuPeriod"), 0),
    }


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


class IoTuneValues:
    """One set of limits (guaranteed, maximum or current); ``values.total_bytes_sec`` reads one,
    as policies do (``tune.maximum.total_bytes_sec``); unknown limits read 0."""

    def __init__(self, values: Mapping[str, Any] | None) -> None:
        self._values = {key: _int((values or {}).get(key), 0) for key in IO_TUNE_KEYS}

    def __getattr__(self, name: str) -> int:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def set(self, key: str, value: Any) -> None:
        """Set one limit (``int()`` of the value, as MOM's controllers do)."""
        self._values[key] = int(value)

    def as_dict(self) -> dict[str, int]:
        """:returns: the six limits."""
        return dict(self._values)


class IoTune:
    """
    A disk's IO tune as policies see it (MOM's ``GuestIoTune``): ``name``, ``path``,
    ``guaranteed``, ``maximum`` and ``current`` limits, and setters for ``current``.
    """

    def __init__(self, name: str, path: str, guaranteed, maximum, current) -> None:
        self.name, self.path = name, path
        self.guaranteed = IoTuneValues(guaranteed)
        self.maximum = IoTuneValues(maximum)
        self.current = IoTuneValues(current)

    def setTotalBytesSec(self, value: Any) -> None:  # noqa: N802 - MOM's policy-facing name
        self.current.set("total_bytes_sec", value)

    def setReadBytesSec(self, value: Any) -> None:  # noqa: N802
        self.current.set("read_bytes_sec", value)

    def setWriteBytesSec(self, value: Any) -> None:  # noqa: N802
        self.current.set("write_bytes_sec", value)

    def setTotalIopsSec(self, value: Any) -> None:  # noqa: N802
        self.current.set("total_iops_sec", value)

    def setReadIopsSec(self, value: Any) -> None:  # noqa: N802
        self.current.set("read_iops_sec", value)

    def setWriteIopsSec(self, value: Any) -> None:  # noqa: N802
        self.current.set("write_iops_sec", value)

    def state(self) -> dict[str, Any]:
        """:returns: ``{"name", "path", "ioTune": current limits}``, VDSM's ``setIoTune`` item."""
        return {"name": self.name, "path": self.path, "ioTune": self.current.as_dict()}


def io_tunes(io_policy: Mapping[str, Any]) -> list[IoTune]:
    """:returns: one :class:`IoTune` per disk with a policy, current values matched by name."""
    current = {c.get("name"): c.get("ioTune") for c in io_policy.get("current_values") or []}
    return [
        IoTune(
            str(p.get("name", "")),
            str(p.get("path", "")),
            p.get("guaranteed"),
            p.get("maximum"),
            current.get(p.get("name")),
        )
        for p in io_policy.get("policy") or []
    ]


def up_guests(vms: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """:returns: the VMs MOM manages, in the order given."""
    return [vm for vm in vms if is_guest(vm)]
