"""Agent restarts on the libvirt test driver: VMs re-adopted with their metadata, external
domains reported read-only. (Real QEMU restarts are in test_agent_qemu.py.)

``test:///default`` keeps its state for as long as one connection to it is open in the process,
so the test holds one open across the agent's restart, as a hypervisor would keep running.
"""

from __future__ import annotations

import uuid

import libvirt
import pytest
import pytest_twisted
from agent_harness import start_agent

from vdsmlike.client import RemoteError


@pytest.fixture
def default_test_host():
    """Keep the process-wide test:///default driver alive; clean up what the test created."""
    conn = libvirt.open("test:///default")
    before = {d.UUIDString() for d in conn.listAllDomains()}
    yield conn
    for dom in conn.listAllDomains():
        if dom.UUIDString() not in before and dom.isActive():
            dom.destroy()
    conn.close()


@pytest_twisted.ensureDeferred
async def test_restarted_agent_recovers_vms_with_their_metadata(tmp_path, default_test_host):
    """After a restart the agent lists the VM Up with its balloon target and custom properties."""
    first = await start_agent(tmp_path / "a", libvirt_uri="test:///default")
    vm_id = str(uuid.uuid4())
    params = {"vmId": vm_id, "vmName": "rec-" + vm_id[:8], "memSize": 256, "custom": {"k": "v"}}
    try:
        await first.call("VM.create", {"vmParams": params})
        await first.wait_for_status(vm_id, "Up")
        await first.call("VM.setBalloonTarget", [vm_id, 200000])
    finally:
        await first.stop()
    second = await start_agent(tmp_path / "b", libvirt_uri="test:///default")
    try:
        listed = await second.call("Host.getVMList", {"onlyUUID": False})
        assert {"vmId": vm_id, "status": "Up"} in listed
        [full] = await second.call("Host.getVMFullList", {"vmList": [vm_id]})
        assert full["custom"] == {"k": "v"}
        [stats] = await second.call("VM.getStats", [vm_id])
        assert stats["balloonInfo"]["balloon_target"] == "200000"
        assert await second.call("VM.pause", [vm_id]) is True
        await second.wait_for_status(vm_id, "Paused")
        await second.call("VM.destroy", [vm_id])
        await second.wait_for_status(vm_id, "Down")
        assert vm_id not in {d.UUIDString() for d in default_test_host.listAllDomains()}
    finally:
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_foreign_domains_are_external_and_read_only(tmp_path, default_test_host):
    """A domain without our metadata is listed as external and mutating verbs refuse it."""
    foreign = default_test_host.lookupByName("test")  # the test driver's own domain
    vm_id = foreign.UUIDString()
    agent = await start_agent(tmp_path, libvirt_uri="test:///default")
    try:
        stats = {s["vmId"]: s for s in await agent.call("Host.getAllVmStats")}
        assert stats[vm_id]["external"] is True
        for verb in ("VM.destroy", "VM.pause"):
            with pytest.raises(RemoteError) as info:
                await agent.call(verb, [vm_id])
            assert info.value.code == 75
        assert foreign.isActive()
    finally:
        await agent.stop()
