"""Hook points as data: every point VDSM knows, its payload kind and whether a failure aborts.

Pure: no I/O. The table follows ``../shared/reference/vdsm.md`` section 4.1. A point's payload
kind decides which environment variable names the payload file (``_hook_domxml`` for ``"xml"``
and ``"none"``, ``_hook_json`` for ``"json"``) and how the runner reads the file back.

``aborts`` is True where VDSM runs the point with ``raiseError=True``: every ``before_*`` point
except ``before_vm_destroy`` (destroy always goes on), ``before_vm_set_ticket`` and
``before_vdsm_start``; plus ``after_disk_prepare``, the one ``after_*`` point whose failure
aborts (the disk is not used). Points for operations the agent does not have yet are listed too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PayloadKind = Literal["xml", "json", "none"]


class UnknownHookPoint(ValueError):
    """A name that is not a hook point (including anything that looks like a path)."""


@dataclass(frozen=True)
class HookPoint:
    """One hook point.

    :ivar name: the point's name, also its directory under the hooks dir.
    :ivar payload: ``"xml"`` (domain or device XML), ``"json"`` or ``"none"`` (an empty file).
    :ivar aborts: whether a failing hook aborts the operation (HookError 1500).
    """

    name: str
    payload: PayloadKind
    aborts: bool


def _pair(op: str, payload: PayloadKind, *, before_aborts: bool = True) -> list[HookPoint]:
    """:returns: the ``before_<op>`` and ``after_<op>`` points."""
    return [
        HookPoint(f"before_{op}", payload, before_aborts),
        HookPoint(f"after_{op}", payload, False),
    ]


def _build() -> list[HookPoint]:
    """:returns: every hook point, in a stable documented order."""
    xml_ops = [
        "vm_start",
        "vm_pause",
        "vm_cont",
        "vm_hibernate",
        "vm_dehibernate",
        "vm_migrate_source",
        "vm_migrate_destination",
        "device_create",
        "device_destroy",
        "device_migrate_source",
        "device_migrate_destination",
        "nic_hotplug",
        "nic_hotunplug",
        "disk_hotplug",
        "disk_hotunplug",
        "update_device",
        "memory_hotplug",
    ]
    json_ops = ["get_caps", "get_stats", "get_vm_stats", "get_all_vm_stats", "network_setup"]
    points: list[HookPoint] = []
    for op in xml_ops:
        points += _pair(op, "xml")
    points += [
        # before_vm_destroy gets an empty file and never stops the destroy.
        HookPoint("before_vm_destroy", "none", False),
        HookPoint("after_vm_destroy", "xml", False),
        *_pair("vm_set_ticket", "xml", before_aborts=False),
        *_pair("set_num_of_cpus", "none"),
        HookPoint("after_nic_hotplug_fail", "xml", False),
        HookPoint("after_nic_hotunplug_fail", "xml", False),
        HookPoint("after_update_device_fail", "xml", False),
    ]
    for op in json_ops:
        points += _pair(op, "json")
    points += [
        HookPoint("after_network_setup_fail", "json", False),
        HookPoint("after_disk_prepare", "json", True),
        HookPoint("after_hostdev_list_by_caps", "json", False),
        HookPoint("before_vdsm_start", "none", False),
        HookPoint("after_vdsm_stop", "none", False),
    ]
    return points


#: Every known hook point by name.
POINTS: dict[str, HookPoint] = {p.name: p for p in _build()}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def point(name: str) -> HookPoint:
    """Look up a hook point.

    :param name: the point's name, e.g. ``"before_vm_start"``.
    :returns: its :class:`HookPoint`.
    :raises UnknownHookPoint: for an unknown name, or one that is a path (``/``, ``..``).
    """
    if not isinstance(name, str) or not _NAME.match(name) or name not in POINTS:
        raise UnknownHookPoint(f"unknown hook point: {name!r}")
    return POINTS[name]
