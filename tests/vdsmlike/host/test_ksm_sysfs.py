"""KSM's sysfs knobs: supervdsm's checks, and writes that go through the blocking runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from vdsmlike.host.ksm import KSM_LIMITS, InvalidKsmParams, KsmSysfs, check_ksm_params
from vdsmlike.virt.runner import SynchronousRunner


class RecordingRunner(SynchronousRunner):
    """Runs inline and records the keys it was given."""

    def __init__(self) -> None:
        self.keys: list[Any] = []

    def run(self, key: Any, fn: Any, *args: Any, **kwargs: Any) -> Deferred:
        self.keys.append(key)
        return super().run(key, fn, *args, **kwargs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A fake KSM directory with every knob at a long old value."""
    for knob in KSM_LIMITS:
        (tmp_path / knob).write_text("123456\n")
    return tmp_path


def result(d: Deferred) -> Any:
    out: list = []
    d.addBoth(out.append)
    assert out
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"run": 0, "merge_across_nodes": 2},
        {"pages_to_scan": 2**32 - 1, "sleep_millisecs": 0},
    ],
)
def test_values_within_supervdsm_bounds_pass(params: dict) -> None:
    """Every knob may take 0 up to one below its bound."""
    assert check_ksm_params(params) == params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"run": 3}, "invalid value (3) for ksm tuning param run"),
        ({"merge_across_nodes": 3}, "merge_across_nodes"),
        ({"pages_to_scan": 2**32}, "pages_to_scan"),
        ({"sleep_millisecs": -1}, "sleep_millisecs"),
        ({"run": True}, "must be an integer"),
        ({"run": 1.0}, "must be an integer"),
        ({"max_page_sharing": 256}, "invalid key"),
    ],
)
def test_values_supervdsm_refuses(params: dict, message: str) -> None:
    """Unknown knobs, values at or over the bound, negatives and non-integers are refused."""
    with pytest.raises(InvalidKsmParams, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_ksm_params(params)


def test_tune_replaces_the_whole_value(tree: Path) -> None:
    """A shorter value replaces a longer one entirely, off the reactor under one key."""
    runner = RecordingRunner()
    result(KsmSysfs(str(tree), runner=runner).tune({"run": 1, "sleep_millisecs": 20}))
    assert (tree / "run").read_text() == "1\n"
    assert (tree / "sleep_millisecs").read_text() == "20\n"
    assert (tree / "pages_to_scan").read_text() == "123456\n"
    assert runner.keys == ["ksm"]


def test_refused_params_write_nothing(tree: Path) -> None:
    """A request with one bad value writes none of its good ones, and never runs a write."""
    runner = RecordingRunner()
    with pytest.raises(InvalidKsmParams):
        result(KsmSysfs(str(tree), runner=runner).tune({"run": 1, "pages_to_scan": -5}))
    assert (tree / "run").read_text() == "123456\n"
    assert runner.keys == []


def test_missing_knob_is_an_error_not_a_new_file(tree: Path) -> None:
    """A knob this kernel lacks fails with FileNotFoundError and is not created."""
    (tree / "merge_across_nodes").unlink()
    with pytest.raises(FileNotFoundError):
        result(KsmSysfs(str(tree), runner=SynchronousRunner()).tune({"merge_across_nodes": 1}))
    assert not (tree / "merge_across_nodes").exists()
