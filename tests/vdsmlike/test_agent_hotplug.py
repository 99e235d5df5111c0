"""Hot-plug through the agent when libvirt cannot do it (the test driver has no device
attach): a clear VDSM error carrying libvirt's message, and the VM untouched. The real plug is
tested on QEMU in test_agent_qemu.py."""

from __future__ import annotations

import pytest
import pytest_twisted
from test_agent_testdriver import create_up

from vdsmlike.client import RemoteError

NIC = (
    "<devices><interface type='user'><mac address='52:54:00:aa:bb:01'/>"
    "<model type='virtio'/></interface></devices>"
)


@pytest_twisted.ensureDeferred
async def test_hotplug_libvirt_refuses_is_error_49_and_changes_nothing(agent):
    """libvirt refusing a NIC hotplug gives error 49 with its message; the VM stays as it was."""
    vm_id = await create_up(agent)
    [before] = await agent.call("VM.getStats", [vm_id])
    with pytest.raises(RemoteError) as info:
        await agent.call("VM.hotplugNic", {"vmID": vm_id, "params": {"xml": NIC}})
    assert info.value.code == 49 and "not supported" in info.value.message
    [after] = await agent.call("VM.getStats", [vm_id])
    assert (after["status"], after["hash"]) == ("Up", before["hash"])


@pytest_twisted.ensureDeferred
async def test_unplugging_a_device_the_vm_lacks_is_refused(agent):
    """Unplugging a NIC or disk the VM does not have answers 50 or 46, naming the problem."""
    vm_id = await create_up(agent)
    nic = {"nic": {"macAddr": "52:54:00:00:00:99", "network": "default"}}
    disk = {"drive": {"path": "/nonexistent.img", "name": "vdz"}}
    for verb, params, code in (
        ("VM.hotunplugNic", nic, 50),
        ("VM.hotunplugDisk", disk, 46),
    ):
        with pytest.raises(RemoteError) as info:
            await agent.call(verb, {"vmID": vm_id, "params": params})
        assert info.value.code == code and "no such" in info.value.message
    bad = {"xml": "<devices><disk type='file'/><disk type='file'/></devices>"}
    with pytest.raises(RemoteError) as info:
        await agent.call("VM.hotplugDisk", {"vmID": vm_id, "params": bad})
    assert info.value.code in (45, -32602)
