"""MOM's controllers as decisions: balloon every cycle, KSM and CPU tune only on change, IO tune
for changed disks, values int()-ed as MOM does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mom import controllers
from mom.collectors.guest import IoTune
from mom.controllers import Action


def guest(uuid="g1", controls=None, **stats):
    return SimpleNamespace(properties={"uuid": uuid}, controls=controls or {}, **stats)


def test_balloon_acts_every_cycle_a_target_is_set():
    """Each guest with a balloon_target gets it, int()-ed, whether or not it changed."""
    guests = [guest("a", {"balloon_target": 1000.9}, balloon_cur=1000), guest("b")]
    assert controllers.balloon(None, guests) == [Action("balloon", "a", 1000)]


def test_ksm_sends_only_changed_settings():
    """KSM controls equal to the host's current values are not sent."""
    host = SimpleNamespace(
        controls={"ksm_run": 1, "ksm_pages_to_scan": 164.0, "ksm_sleep_millisecs": 10},
        ksm_run=0,
        ksm_pages_to_scan=164,
        ksm_sleep_millisecs=20,
        ksm_merge_across_nodes=1,
    )
    assert controllers.ksm(host, []) == [Action("ksm", None, {"run": 1, "sleep_millisecs": 10})]
    host.ksm_run, host.ksm_sleep_millisecs = 1, 10
    assert controllers.ksm(host, []) == []


def test_cpu_tune_acts_only_on_change():
    """Quota and period go out together, and only when they differ from the guest's."""
    same = guest("a", {"vcpu_quota": -1, "vcpu_period": 100000}, vcpu_quota=-1, vcpu_period=100000)
    new = guest(
        "b", {"vcpu_quota": 25000.5, "vcpu_period": 100000}, vcpu_quota=-1, vcpu_period=100000
    )
    assert controllers.cpu_tune(None, [same, new]) == [Action("cpu_tune", "b", (25000, 100000))]


def test_io_tune_sends_the_disks_the_policy_changed():
    """Only disks whose limits differ from io_tune_current are sent."""
    changed = IoTune("vda", "/a", {}, {"total_bytes_sec": 9}, {})
    kept = IoTune("vdb", "/b", {}, {}, {})
    changed.setTotalBytesSec(9)
    current = [
        changed.state() | {"ioTune": dict.fromkeys(changed.state()["ioTune"], 0)},
        kept.state(),
    ]
    g = guest("a", io_tune=[changed, kept], io_tune_current=current)
    [action] = controllers.io_tune(None, [g])
    assert action.kind == "io_tune" and [d["name"] for d in action.value] == ["vda"]


def test_unknown_controller_names_are_refused():
    """A controller MOM does not have is a configuration error naming the known ones."""
    with pytest.raises(ValueError, match="Balloon"):
        controllers.controller("Turbo")
