"""Tests for hooks.points: the hook point table and name checks."""

from __future__ import annotations

import pytest

from hooks.points import POINTS, HookPoint, UnknownHookPoint, point

ISSUE_OPS = [
    "vm_start",
    "vm_destroy",
    "vm_pause",
    "vm_cont",
    "vm_migrate_source",
    "vm_migrate_destination",
    "vm_hibernate",
    "vm_dehibernate",
    "vm_set_ticket",
    "device_create",
    "device_destroy",
    "nic_hotplug",
    "nic_hotunplug",
    "disk_hotplug",
    "disk_hotunplug",
    "update_device",
    "set_num_of_cpus",
    "get_caps",
    "get_stats",
    "get_vm_stats",
    "get_all_vm_stats",
    "network_setup",
]


def test_every_issue_point_is_known() -> None:
    """Every before_/after_ pair the issue lists, and the odd ones out, are hook points."""
    names = [f"{when}_{op}" for op in ISSUE_OPS for when in ("before", "after")]
    names += [
        "after_nic_hotplug_fail",
        "after_nic_hotunplug_fail",
        "before_vdsm_start",
        "after_vdsm_stop",
        "after_disk_prepare",
    ]
    for name in names:
        assert point(name) == POINTS[name]
        assert point(name).name == name


def test_payload_kinds() -> None:
    """VM and device points carry XML, get_*/network/disk-prepare JSON, the rest nothing."""
    assert point("before_vm_start").payload == "xml"
    assert point("after_nic_hotplug_fail").payload == "xml"
    assert point("after_vm_destroy").payload == "xml"
    assert point("before_vm_destroy").payload == "none"
    for name in ["before_get_caps", "after_get_all_vm_stats", "before_network_setup"]:
        assert point(name).payload == "json"
    assert point("after_disk_prepare").payload == "json"
    assert point("before_set_num_of_cpus").payload == "none"
    assert point("before_vdsm_start").payload == "none"


def test_aborts() -> None:
    """before_* points abort, except vm_destroy, vm_set_ticket and vdsm_start; after_* never do."""
    for name, spec in POINTS.items():
        if name.startswith("after_") and name != "after_disk_prepare":
            assert not spec.aborts, name
    assert point("before_vm_start").aborts
    assert point("before_vm_migrate_source").aborts
    assert point("before_get_vm_stats").aborts
    assert point("after_disk_prepare").aborts
    assert not point("before_vm_destroy").aborts
    assert not point("before_vm_set_ticket").aborts
    assert not point("before_vdsm_start").aborts


def test_points_are_frozen_data() -> None:
    """A HookPoint is immutable data keyed by its own name."""
    spec = point("before_vm_pause")
    assert spec == HookPoint("before_vm_pause", "xml", True)
    with pytest.raises(AttributeError):
        spec.aborts = False  # type: ignore[misc]
    assert all(key == value.name for key, value in POINTS.items())


@pytest.mark.parametrize(
    "name",
    [
        "before_nap",
        "",
        "/etc/passwd",
        "../before_vm_start",
        "before_vm_start/..",
        "..",
        "a/b",
        "BEFORE_VM_START",
        "before_vm_start\n",
        None,
    ],
)
def test_unknown_names_refused(name: object) -> None:
    """Unknown names and anything path-like raise UnknownHookPoint, a ValueError."""
    with pytest.raises(UnknownHookPoint):
        point(name)  # type: ignore[arg-type]
    assert issubclass(UnknownHookPoint, ValueError)
