"""Tests for hooks.plugins: which plugins serve which points, loading from entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from stevedore.extension import Extension

from hooks.plugins import HookContext, PluginSet, load_plugins, serves


class FakePointsPlugin:
    """A plugin that declares its points with a ``points`` attribute."""

    points = frozenset({"before_vm_start"})

    def __call__(self, point, payload, context):
        return None


class FakeServesPlugin:
    """A plugin that decides with a ``serves`` method."""

    def serves(self, point):
        return point.startswith("after_")

    def __call__(self, point, payload, context):
        return None


def ext(name: str, obj: object) -> Extension:
    """:returns: a stevedore test extension around ``obj``."""
    return Extension(name, None, type(obj), obj)


def test_points_attribute_selects_points() -> None:
    """A plugin with ``points`` serves exactly those points."""
    assert serves(FakePointsPlugin(), "before_vm_start")
    assert not serves(FakePointsPlugin(), "after_vm_start")


def test_serves_method_selects_points() -> None:
    """A plugin with ``serves`` is asked about each point."""
    assert serves(FakeServesPlugin(), "after_vm_destroy")
    assert not serves(FakeServesPlugin(), "before_vm_destroy")


def test_from_extensions_keeps_order_and_filters_by_point() -> None:
    """A set from extensions keeps their order and returns only the plugins serving a point."""
    plugins = PluginSet.from_extensions(
        [ext("b", FakePointsPlugin()), ext("a", FakeServesPlugin()), ext("c", FakePointsPlugin())]
    )
    assert plugins.names() == ["b", "a", "c"]
    assert [p.name for p in plugins.for_point("before_vm_start")] == ["b", "c"]
    assert [p.name for p in plugins.for_point("after_vm_start")] == ["a"]


def test_object_without_points_is_skipped() -> None:
    """An extension whose object declares no points is left out of the set."""
    plugins = PluginSet.from_extensions([ext("bad", object()), ext("ok", FakePointsPlugin())])
    assert plugins.names() == ["ok"]


def test_installed_lists_plugins_per_point() -> None:
    """``installed`` lists each plugin as ``plugin:<name>`` with a sha256 of its source file."""
    plugins = PluginSet.from_extensions([ext("flags", FakePointsPlugin())])
    inventory = plugins.installed(["before_vm_start", "after_vm_start"])
    assert list(inventory) == ["before_vm_start"]
    assert len(inventory["before_vm_start"]["plugin:flags"]["checksum"]) == 64


def test_context_mappings_are_read_only() -> None:
    """A context's custom properties cannot be changed by a plugin."""
    context = HookContext.build("before_vm_start", "vm1", {"a": "1"}, None)
    with pytest.raises(TypeError):
        context.custom["a"] = "2"  # type: ignore[index]
    assert dict(context.params) == {}


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away installed distribution registering plugins in ``vdsmlike.hooks``."""
    info = tmp_path / "vdsmlike_test_hook_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vdsmlike-test-hook-plugins\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [vdsmlike.hooks]
            first = vdsmlike_test_plugins_good:First
            second = vdsmlike_test_plugins_good:Second
            broken = vdsmlike_test_plugins_broken:Broken
            crashing = vdsmlike_test_plugins_good:Crashing
            disabled = vdsmlike_test_plugins_disabled:Disabled
            """
        )
    )
    plugin_class = "class {0}:\n    points = frozenset({{'before_vm_start'}})\n" + (
        "    def __call__(self, point, payload, context):\n        return None\n"
    )
    (tmp_path / "vdsmlike_test_plugins_good.py").write_text(
        plugin_class.format("First")
        + plugin_class.format("Second")
        + "class Crashing:\n    def __init__(self):\n        raise RuntimeError('no')\n"
    )
    (tmp_path / "vdsmlike_test_plugins_broken.py").write_text("raise ImportError('broken')\n")
    (tmp_path / "vdsmlike_test_plugins_disabled.py").write_text(plugin_class.format("Disabled"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in list(sys.modules):
        if name.startswith("vdsmlike_test_plugins_"):
            monkeypatch.delitem(sys.modules, name)
    return tmp_path


def test_load_plugins_in_configured_order(distribution: Path) -> None:
    """Plugins load in the order they are configured, not the entry points' order."""
    plugins = load_plugins(["second", "first"])
    assert plugins.names() == ["second", "first"]


def test_disabled_plugin_is_not_imported(distribution: Path) -> None:
    """A disabled plugin is neither loaded nor even imported."""
    plugins = load_plugins(["first", "disabled"], disabled={"disabled"})
    assert plugins.names() == ["first"]
    assert "vdsmlike_test_plugins_disabled" not in sys.modules


def test_plugin_failing_to_load_is_skipped(distribution: Path) -> None:
    """Plugins that fail to import or to instantiate, or do not exist, are skipped."""
    plugins = load_plugins(["broken", "first", "crashing", "missing", "second"])
    assert plugins.names() == ["first", "second"]


def test_no_plugins_configured() -> None:
    """With no plugin names the set is empty, without consulting entry points."""
    assert len(load_plugins([])) == 0
