"""Tests for engine.decide.plugins: loading filters and weights by name through stevedore."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.decide import plugins
from engine.decide.filters import CpuFilter, MemoryFilter, StatusFilter
from engine.decide.model import HOST_UP, HostView, VmRequest
from engine.decide.plugins import (
    FILTER_NAMESPACE,
    WEIGHT_NAMESPACE,
    PluginError,
    installed,
    load_filters,
    load_weights,
    units_for,
)
from engine.decide.policies import Policy, PolicyError, make_policy
from engine.decide.scheduler import schedule
from engine.decide.weights import PackCpuWeight, VmCountWeight


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test loads plugins afresh and leaves nothing cached behind."""
    plugins.clear_cache()
    yield
    plugins.clear_cache()


def test_builtin_plugins_are_installed() -> None:
    """The package registers its filters and weights under the two namespaces."""
    assert installed(FILTER_NAMESPACE) == [
        "cpu",
        "cpu_overloaded",
        "excluded",
        "host_affinity",
        "memory",
        "pinning",
        "status",
        "vm_affinity",
    ]
    assert installed(WEIGHT_NAMESPACE) == [
        "cpu_load",
        "free_memory",
        "host_affinity",
        "pack_cpu",
        "pack_memory",
        "vm_affinity",
        "vm_count",
    ]


def test_filters_load_in_the_order_named() -> None:
    """Filters come back in the order asked for, not the entry points' order."""
    loaded = load_filters(["memory", "status", "cpu"])
    assert [type(f) for f in loaded] == [MemoryFilter, StatusFilter, CpuFilter]


def test_weights_load_by_name() -> None:
    """Weights load by their entry-point names."""
    assert [type(w) for w in load_weights(["vm_count", "pack_cpu"])] == [
        VmCountWeight,
        PackCpuWeight,
    ]


def test_loading_is_cached_per_list_of_names() -> None:
    """Loading the same names twice gives the same objects without asking stevedore again."""
    assert load_filters(["cpu"]) is load_filters(["cpu"])


def test_unknown_filter_is_a_clear_error() -> None:
    """An unknown filter name fails, naming it and listing the installed filters."""
    with pytest.raises(PluginError, match=r"unknown scheduler filter 'gpu' \(installed: cpu, "):
        load_filters(["status", "gpu"])


def test_unknown_weight_is_a_clear_error() -> None:
    """An unknown weight name fails, naming it and listing the installed weights."""
    with pytest.raises(PluginError, match="unknown scheduler weight 'nearest'.*vm_count"):
        load_weights(["nearest"])


def test_a_name_given_twice_is_refused() -> None:
    """Naming a plugin twice is a configuration error."""
    with pytest.raises(PluginError, match="named twice"):
        load_filters(["cpu", "cpu"])


def test_units_for_a_policy_add_the_mandatory_filters_and_factors() -> None:
    """A policy's units are the mandatory filters, its own filters, and its weighted weights."""
    units = units_for(Policy("custom", filters=("memory",), weights=(("vm_count", 3),)))
    assert [f.name for f in units.filters] == [
        "status",
        "excluded",
        "pinning",
        "vm_affinity",
        "host_affinity",
        "memory",
    ]
    assert [(w.name, factor) for w, factor in units.weights] == [("vm_count", 3)]


def test_units_for_every_builtin_policy_load() -> None:
    """Every built-in policy names only installed plugins."""
    for name in ("none", "evenly_distributed", "power_saving", "vm_evenly_distributed"):
        units = units_for(make_policy(name))
        assert len(units.filters) == 8 and units.weights


def test_schedule_with_an_unknown_plugin_fails() -> None:
    """Scheduling under a policy that names an unknown weight fails instead of ignoring it."""
    host = HostView("h1", "host1", HOST_UP, 4, 8192, 8192)
    policy = Policy("custom", weights=(("nearest", 1),))
    with pytest.raises(PluginError, match="nearest"):
        schedule(VmRequest("v", "vm", 512, 1), [host], policy)


@pytest.mark.parametrize("factor", [-1, 1.5, True])
def test_bad_factor_is_refused(factor: object) -> None:
    """A weight factor must be a non-negative integer."""
    with pytest.raises(PolicyError, match="factor"):
        units_for(Policy("custom", weights=(("vm_count", factor),)))  # type: ignore[arg-type]


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away installed distribution adding third-party scheduler plugins."""
    info = tmp_path / "vdsmlike_test_sched_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vdsmlike-test-sched-plugins\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [{FILTER_NAMESPACE}]
            even_ids = vdsmlike_test_sched_good:EvenIds
            misnamed = vdsmlike_test_sched_good:EvenIds
            shapeless = vdsmlike_test_sched_good:Shapeless
            broken = vdsmlike_test_sched_broken:Broken
            [{WEIGHT_NAMESPACE}]
            longest_name = vdsmlike_test_sched_good:LongestName
            """
        )
    )
    (tmp_path / "vdsmlike_test_sched_good.py").write_text(
        textwrap.dedent(
            """\
            class EvenIds:
                name = "even_ids"
                def refusal(self, vm, host, policy):
                    return None if int(host.id[1:]) % 2 == 0 else "odd id"

            class Shapeless:
                name = "shapeless"

            class Weighing:
                def __init__(self, value, detail):
                    self.value, self.detail = value, detail

            class LongestName:
                name = "longest_name"
                def weigh(self, vm, host, policy):
                    return Weighing(-len(host.name), f"{len(host.name)} letters")
            """
        )
    )
    (tmp_path / "vdsmlike_test_sched_broken.py").write_text("raise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in list(sys.modules):
        if name.startswith("vdsmlike_test_sched_"):
            monkeypatch.delitem(sys.modules, name)
    return tmp_path


def test_third_party_plugins_take_part_in_decisions(distribution: Path) -> None:
    """Plugins from another package load by name and filter and weigh like built-in ones."""
    hosts = [
        HostView("h1", "a", HOST_UP, 4, 8192, 8192),
        HostView("h2", "bb", HOST_UP, 4, 8192, 8192),
        HostView("h4", "dddd", HOST_UP, 4, 8192, 8192),
        HostView("h5", "eeeee", HOST_UP, 4, 8192, 8192),
    ]
    policy = Policy("custom", filters=("even_ids",), weights=(("longest_name", 1),))
    decision = schedule(VmRequest("v", "vm", 512, 1), hosts, policy)
    assert decision.host == "h4"
    assert decision.explanations["h5"] == ["refused by even_ids: odd id"]
    assert "longest_name ×1: 4 letters" in decision.explanations["h4"][1]


def test_a_plugin_without_its_method_is_refused(distribution: Path) -> None:
    """A filter plugin without ``refusal()`` is an error, not a filter that never refuses."""
    with pytest.raises(PluginError, match="'shapeless' has no refusal"):
        load_filters(["shapeless"])


def test_a_plugin_whose_name_differs_is_refused(distribution: Path) -> None:
    """A plugin must call itself by its entry-point name, so explanations name it rightly."""
    with pytest.raises(PluginError, match="registered as 'misnamed' calls itself 'even_ids'"):
        load_filters(["misnamed"])


def test_a_plugin_that_fails_to_import_is_an_error(distribution: Path) -> None:
    """A plugin whose module fails to import is reported with the import error."""
    with pytest.raises(PluginError, match="'broken' failed to load: ImportError"):
        load_filters(["broken"])


def test_unwanted_plugins_are_not_imported(distribution: Path) -> None:
    """Only the plugins a policy names are imported; a broken one it does not name is harmless."""
    load_filters(["even_ids"])
    assert "vdsmlike_test_sched_broken" not in sys.modules
