"""Tests for the example hooks in contrib/hooks/, run for real.

The scripts run as child processes through the real ``ScriptHookRunner`` from a temporary hooks
directory (skipped while ``hooks.scripts`` is not there); the example plugin runs in process
through :class:`hooks.runner.HookRunner`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from stevedore.extension import Extension
from twisted.internet.defer import succeed
from twisted.python.failure import Failure

from hooks.plugins import PluginSet
from hooks.runner import HookRunner, NullHookRunner
from vdsmlike.api.errors import HookError

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "hooks"
VM_ID = "6b7e2a4c-0d7c-4c1e-9a43-3f0f7b1c2d11"
DOMAIN = """<domain type='kvm'>
  <name>vm1</name>
  <cpu mode='custom'><model>qemu64</model><feature policy='require' name='svm'/></cpu>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/b.raw'/><target dev='vdb'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu'/><target dev='sda'/></disk>
  </devices>
</domain>"""


class FakeNoScripts:
    """A script side with no scripts: passes the payload through."""

    def run(self, point, payload, *, vm_id=None, custom=None, params=None):
        class Outcome:
            results: list = []
            errors: list = []
            stopped = False

        outcome = Outcome()
        outcome.payload = payload
        return succeed(outcome)

    def installed(self) -> dict:
        return {}


def cpu_features(xml: str) -> dict[str, str]:
    """:returns: ``{feature name: policy}`` of the domain's ``<cpu>``."""
    cpu = ET.fromstring(xml.encode("utf-8")).find("cpu")
    return {f.get("name"): f.get("policy") for f in cpu.findall("feature")}


def load_describe_plugin() -> Any:
    """:returns: the example plugin module, loaded from its file."""
    path = CONTRIB / "plugins" / "describe.py"
    spec = importlib.util.spec_from_file_location("contrib_hooks_describe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe_runner() -> HookRunner:
    """:returns: a runner with the example plugin registered through ``make_test_instance``."""
    cls = load_describe_plugin().DescriptionFromCustom
    plugins = PluginSet.from_extensions([Extension("describe", None, cls, cls())])
    return HookRunner(FakeNoScripts(), plugins)


def result_of(d: Any) -> Any:
    """:returns: the result of a Deferred that has already fired (raising its failure)."""
    box: list = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def test_describe_plugin_sets_description() -> None:
    """The example plugin puts the ``description`` custom property into ``<description>``."""
    result = result_of(
        describe_runner().run("before_vm_start", DOMAIN, custom={"description": "web & db"})
    )
    assert "<description>web &amp; db</description>" in result.payload
    assert result.payload.count("<description>") == 1


def test_describe_plugin_without_property_changes_nothing() -> None:
    """Without the custom property the example plugin leaves the XML text untouched."""
    assert result_of(describe_runner().run("before_vm_start", DOMAIN)).payload == DOMAIN


def test_describe_plugin_vetoes_huge_description() -> None:
    """An overlong description vetoes the start with HookError 1500 and the plugin's message."""
    with pytest.raises(HookError, match="more than 1024"):
        custom = {"description": "x" * 2000}
        result_of(describe_runner().run("before_vm_start", DOMAIN, custom=custom))


def test_null_runner_leaves_payload() -> None:
    """The null runner is the no-hooks baseline: same payload out."""
    assert result_of(NullHookRunner().run("before_vm_start", DOMAIN)).payload == DOMAIN


# Scripts run directly, with the real hooking module (no runner).

PYTHONPATH = Path(__file__).resolve().parents[2] / "hooks" / "pythonpath"


def run_directly(example: str, tmp_path: Path, **env: str) -> tuple[int, str, str]:
    """Run ``contrib/hooks/<example>`` on DOMAIN as VDSM would. :returns: (rc, new XML, stderr)."""
    payload = tmp_path / "domxml"
    payload.write_text(DOMAIN)
    full_env = {**os.environ, "PYTHONPATH": str(PYTHONPATH), "_hook_domxml": str(payload), **env}
    done = subprocess.run(
        [str(CONTRIB / example)], env=full_env, capture_output=True, text=True, timeout=60
    )
    return done.returncode, payload.read_text(), done.stderr


def test_cpuflags_directly(tmp_path: Path) -> None:
    """The cpuflags script, run alone, requires vmx and disables svm."""
    rc, xml, _ = run_directly("before_vm_start/50_cpuflags", tmp_path, cpuflags="+vmx,-svm")
    assert rc == 0
    assert cpu_features(xml) == {"vmx": "require", "svm": "disable"}


def test_diskdiscard_directly_rejects_bad_mode(tmp_path: Path) -> None:
    """The diskdiscard script exits 2 on an unknown mode and leaves the XML alone."""
    rc, xml, err = run_directly("before_vm_start/50_diskdiscard", tmp_path, discard="shred")
    assert (rc, xml) == (2, DOMAIN)
    assert "shred" in err


def test_localdisk_veto_directly(tmp_path: Path) -> None:
    """The localdisk script exits 2 with a message for localdisk=True and 0 without it."""
    example = "before_vm_migrate_source/50_localdisk_veto"
    assert run_directly(example, tmp_path, localdisk="True", vmId=VM_ID)[0] == 2
    assert run_directly(example, tmp_path)[0] == 0


# Scripts, run for real through ScriptHookRunner.


@pytest.fixture
def scripts_module() -> Any:
    """The real script side, or a skip while it does not exist yet."""
    return pytest.importorskip("hooks.scripts")


def runner_with(
    scripts_module: Any, tmp_path: Path, *examples: str, plugins: PluginSet | None = None
) -> HookRunner:
    """:returns: a HookRunner over a temp hooks dir holding copies of ``examples``."""
    from twisted.internet import reactor

    hooks_dir = tmp_path / "hooks"
    for example in examples:
        target = hooks_dir / example
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CONTRIB / example, target)
    scripts = scripts_module.ScriptHookRunner(
        str(hooks_dir), reactor=reactor, runtime_dir=str(tmp_path / "run"), timeout=30.0
    )
    return HookRunner(scripts, plugins or PluginSet())


@pytest_twisted.ensureDeferred
async def test_cpuflags_adds_and_disables_flags(scripts_module: Any, tmp_path: Path) -> None:
    """``cpuflags=+vmx,-svm`` requires vmx and turns the existing svm feature to disable."""
    runner = runner_with(scripts_module, tmp_path, "before_vm_start/50_cpuflags")
    result = await runner.run(
        "before_vm_start", DOMAIN, vm_id=VM_ID, custom={"cpuflags": "+vmx,-svm"}
    )
    assert cpu_features(result.payload) == {"vmx": "require", "svm": "disable"}
    assert result.payload.count('name="svm"') == 1


@pytest_twisted.ensureDeferred
async def test_cpuflags_malformed_aborts(scripts_module: Any, tmp_path: Path) -> None:
    """A malformed flag aborts the start with HookError naming it."""
    runner = runner_with(scripts_module, tmp_path, "before_vm_start/50_cpuflags")
    with pytest.raises(HookError, match="malformed flag"):
        await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID, custom={"cpuflags": "+v mx"})


@pytest_twisted.ensureDeferred
async def test_diskdiscard_sets_unmap_on_disks_only(scripts_module: Any, tmp_path: Path) -> None:
    """``discard=unmap`` sets discard on both disks (adding a driver) but not on the CD-ROM."""
    runner = runner_with(scripts_module, tmp_path, "before_vm_start/50_diskdiscard")
    result = await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID, custom={"discard": "unmap"})
    assert result.payload.count('discard="unmap"') == 2
    cdrom = result.payload[result.payload.index('device="cdrom"') :]
    assert "discard" not in cdrom


@pytest_twisted.ensureDeferred
async def test_diskdiscard_without_property_is_noop(scripts_module: Any, tmp_path: Path) -> None:
    """Without the ``discard`` property the disks keep their drivers as they were."""
    runner = runner_with(scripts_module, tmp_path, "before_vm_start/50_diskdiscard")
    result = await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID)
    assert "discard" not in result.payload


@pytest_twisted.ensureDeferred
async def test_localdisk_veto_blocks_migration(scripts_module: Any, tmp_path: Path) -> None:
    """A VM with ``localdisk=true`` cannot migrate: HookError 1500 with the script's message."""
    runner = runner_with(scripts_module, tmp_path, "before_vm_migrate_source/50_localdisk_veto")
    with pytest.raises(HookError, match="local disk") as raised:
        await runner.run(
            "before_vm_migrate_source", DOMAIN, vm_id=VM_ID, custom={"localdisk": "true"}
        )
    assert raised.value.code == 1500


@pytest_twisted.ensureDeferred
async def test_localdisk_veto_allows_other_vms(scripts_module: Any, tmp_path: Path) -> None:
    """A VM without ``localdisk`` (or with it false) migrates."""
    runner = runner_with(scripts_module, tmp_path, "before_vm_migrate_source/50_localdisk_veto")
    result = await runner.run(
        "before_vm_migrate_source", DOMAIN, vm_id=VM_ID, custom={"localdisk": "false"}
    )
    assert result.errors == []


def install_script(tmp_path: Path, point: str, name: str, text: str) -> None:
    """Write an executable script ``name`` for ``point`` into the temp hooks dir."""
    path = tmp_path / "hooks" / point / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest_twisted.ensureDeferred
async def test_launch_flags_surface(scripts_module: Any, tmp_path: Path) -> None:
    """A before_vm_start script asking to start paused shows up as ``launch_flags == 1``."""
    install_script(
        tmp_path,
        "before_vm_start",
        "10_paused",
        "#!/usr/bin/env python3\nimport os, hooking\n"
        "hooking.dump_vm_launch_flags_to_file(os.environ['vmId'], 1)\n",
    )
    runner = runner_with(scripts_module, tmp_path)
    result = await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID)
    assert result.launch_flags == 1
    (tmp_path / "hooks" / "before_vm_start" / "10_paused").unlink()
    again = await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID)
    assert again.launch_flags is None, "flags apply to one start only"


@pytest_twisted.ensureDeferred
async def test_plugin_and_script_at_one_point(scripts_module: Any, tmp_path: Path) -> None:
    """The example plugin runs first and the example script edits its output: both changes land."""
    cls = load_describe_plugin().DescriptionFromCustom
    plugins = PluginSet.from_extensions([Extension("describe", None, cls, cls())])
    example = "before_vm_start/50_diskdiscard"
    runner = runner_with(scripts_module, tmp_path, example, plugins=plugins)
    custom = {"discard": "unmap", "description": "both"}
    result = await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID, custom=custom)
    assert "<description>both</description>" in result.payload
    assert result.payload.count('discard="unmap"') == 2
