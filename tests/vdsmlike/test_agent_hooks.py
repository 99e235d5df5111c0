"""Hook scripts under the real agent: what they write is what libvirt runs, a veto leaves no
VM behind, and getCapabilities lists them with their checksums."""

from __future__ import annotations

import hashlib
import sys
import uuid

import pytest_twisted
from agent_harness import node_uri, start_agent

REWRITE = f"""#!{sys.executable}
import hooking
dom = hooking.read_domxml()
desc = dom.createElement("description")
desc.appendChild(dom.createTextNode("tier=" + __import__("os").environ.get("tier", "?")))
dom.documentElement.appendChild(desc)
hooking.write_domxml(dom)
"""

VETO = """#!/bin/sh
echo "VM $vmId may not start here" >&2
exit 2
"""


def install(hooks_dir, point, name, text):
    path = hooks_dir / point / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest_twisted.ensureDeferred
async def test_hook_edits_reach_libvirt_and_vetoes_leave_nothing(tmp_path):
    """A rewriting before_vm_start hook changes the started domain; a veto ends the VM Down."""
    hooks_dir = tmp_path / "hooks"
    script = install(hooks_dir, "before_vm_start", "10_describe", REWRITE)
    uri = node_uri(tmp_path)
    agent = await start_agent(tmp_path, libvirt_uri=uri, hooks_dir=str(hooks_dir))
    try:
        caps = await agent.call("Host.getCapabilities")
        digest = hashlib.sha256(script.read_bytes()).hexdigest()
        assert caps["hooks"]["before_vm_start"]["10_describe"] == {"checksum": digest}

        vm_id = str(uuid.uuid4())
        params = {"vmId": vm_id, "vmName": "h1", "memSize": 64, "custom": {"tier": "gold"}}
        await agent.call("VM.create", {"vmParams": params})
        await agent.wait_for_status(vm_id, "Up")
        xml = (await agent.call("Host.dumpxmls", [[vm_id]]))["domxmls"][vm_id]
        assert "<description>tier=gold</description>" in xml

        install(hooks_dir, "before_vm_start", "20_veto", VETO)
        vetoed = str(uuid.uuid4())
        params = {"vmId": vetoed, "vmName": "h2", "memSize": 64}
        await agent.call("VM.create", {"vmParams": params})
        await agent.wait_for_status(vetoed, "Down")
        [stats] = await agent.call("VM.getStats", [vetoed])
        assert "may not start here" in stats["exitMessage"]
        running = [d.vm_id for d in await agent.top.core._hv.list_domains()]
        assert vetoed not in running and vm_id in running
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_agent_start_and_stop_hooks_run(tmp_path):
    """before_vdsm_start runs before the agent serves; after_vdsm_stop when it stops."""
    hooks_dir = tmp_path / "hooks"
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    install(hooks_dir, "before_vdsm_start", "10_mark", f"#!/bin/sh\ntouch {started}\n")
    install(hooks_dir, "after_vdsm_stop", "10_mark", f"#!/bin/sh\ntouch {stopped}\n")
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), hooks_dir=str(hooks_dir))
    assert started.exists() and not stopped.exists()
    await agent.stop()
    assert stopped.exists()


@pytest_twisted.ensureDeferred
async def test_api_hooks_can_amend_results_or_refuse_calls(tmp_path):
    """after_get_caps hooks amend the capabilities; a before_get_vm_stats failure is error 78."""
    from vdsmlike.client import RemoteError

    hooks_dir = tmp_path / "hooks"
    amend = (
        f"#!{sys.executable}\nimport hooking\n"
        "caps = hooking.read_json()\ncaps['rackLocation'] = 'B4'\nhooking.write_json(caps)\n"
    )
    install(hooks_dir, "after_get_caps", "10_rack", amend)
    install(hooks_dir, "before_get_vm_stats", "10_no", "#!/bin/sh\necho busy >&2\nexit 1\n")
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), hooks_dir=str(hooks_dir))
    try:
        assert (await agent.call("Host.getCapabilities"))["rackLocation"] == "B4"
        vm_id = str(uuid.uuid4())
        await agent.call("VM.create", {"vmParams": {"vmId": vm_id, "vmName": "s", "memSize": 64}})
        try:
            await agent.call("VM.getStats", [vm_id])
            raise AssertionError("the hook should have refused")
        except RemoteError as e:
            assert e.code == 78 and "busy" in e.message
        assert [s["vmId"] for s in await agent.call("Host.getAllVmStats")] == [vm_id]
    finally:
        await agent.stop()


DEVICE_MTU = f"""#!{sys.executable}
import os
import hooking
dom = hooking.read_domxml()
nic = dom.documentElement
assert nic.tagName == "interface", nic.tagName
mtu = dom.createElement("mtu")
mtu.setAttribute("size", os.environ["mtu"])
nic.appendChild(mtu)
hooking.write_domxml(dom)
"""


@pytest_twisted.ensureDeferred
async def test_device_hooks_edit_custom_devices_in_libvirt_and_see_them_at_destroy(tmp_path):
    """A before_device_create script edits only the NIC that has custom properties, libvirt runs
    the edit, and the destroy-time device hooks get the NIC's properties in their environment."""
    hooks_dir = tmp_path / "hooks"
    marks = tmp_path / "marks"
    install(hooks_dir, "before_device_create", "50_mtu", DEVICE_MTU)
    for point in ("after_device_create", "before_device_destroy", "after_device_destroy"):
        mark = f'#!/bin/sh\necho "{point} $mtu $vmId" >> {marks}\n'
        install(hooks_dir, point, "10_mark", mark)
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), hooks_dir=str(hooks_dir))
    try:
        vm_id = str(uuid.uuid4())
        nics = [
            {"macAddr": "52:54:00:00:0d:01", "custom": {"mtu": "9000"}},
            {"macAddr": "52:54:00:00:0d:02"},
        ]
        params = {"vmId": vm_id, "vmName": "dev", "memSize": 64, "nics": nics}
        await agent.call("VM.create", {"vmParams": params})
        await agent.wait_for_status(vm_id, "Up")
        xml = (await agent.call("Host.dumpxmls", [[vm_id]]))["domxmls"][vm_id]
        devices = xml.split("<devices>")[1]
        assert devices.count("<mtu size='9000'/>") + devices.count('<mtu size="9000"/>') == 1
        await agent.call("VM.destroy", [vm_id])
        assert marks.read_text().splitlines() == [
            f"after_device_create 9000 {vm_id}",
            f"before_device_destroy 9000 {vm_id}",
            f"after_device_destroy 9000 {vm_id}",
        ]
    finally:
        await agent.stop()
