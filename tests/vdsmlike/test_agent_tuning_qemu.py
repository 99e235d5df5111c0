"""The tuning verbs on a real QEMU guest: ``VM.setCpuTuneQuota``, ``VM.setCpuTunePeriod`` and
``VM.setIoTune`` over the agent's WebSocket change what libvirt reports for the running guest.

The agent runs in this process on the session's embedded QEMU root (one embedded root per
process), so the test can also ask libvirt itself, through the agent's hypervisor adapter.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import pytest_twisted
from agent_harness import eventually, start_agent
from defusedxml import ElementTree

from vdsmlike.client import RemoteError
from vdsmlike.virt.events import CpuTune

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest_twisted.ensureDeferred
async def test_tuning_verbs_change_what_libvirt_reports(tmp_path, guest_image, embedded_root):
    """CPU quota and period and a disk's limits set through the agent are the live guest's:
    libvirt's scheduler parameters, block IO tune and domain XML all say so."""
    disk = Path(embedded_root) / f"tune-{uuid.uuid4().hex[:8]}.img"
    disk.write_bytes(bytes(4 * 1024 * 1024))
    agent = await start_agent(
        tmp_path, libvirt_uri=f"qemu:///embed?root={embedded_root}", guest_wait_timeout=1.0
    )
    vm_id = str(uuid.uuid4())
    try:
        params = {
            "vmId": vm_id,
            "vmName": "tune-" + vm_id[:8],
            "memSize": 192,
            "kernel": str(guest_image / "vmlinuz"),
            "initrd": str(guest_image / "initrd.img"),
            "kernelArgs": "console=ttyS0 quiet",
            "drives": [{"path": str(disk), "format": "raw", "iface": "virtio"}],
        }
        await agent.call("VM.create", {"vmParams": params})
        await agent.wait_for_status(vm_id, "Up", timeout=60)
        hypervisor = agent.top.hypervisor
        assert (await hypervisor.get_cpu_tune(vm_id)).quota == -1

        assert await agent.call("VM.setCpuTuneQuota", [vm_id, 25000]) is True
        assert await agent.call("VM.setCpuTunePeriod", [vm_id, 50000]) is True
        tunables = [{"name": "vda", "ioTune": {"read_bytes_sec": 1048576, "write_iops_sec": 30}}]
        assert await agent.call("VM.setIoTune", [vm_id, tunables]) is True

        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(25000, 50000, 1)
        limits = await hypervisor.get_block_io_tune(vm_id, "vda")
        assert {k: v for k, v in limits.items() if v} == {
            "read_bytes_sec": 1048576,
            "write_iops_sec": 30,
        }
        live = ElementTree.fromstring(await hypervisor.get_xml(vm_id))
        assert (live.findtext("cputune/quota"), live.findtext("cputune/period")) == (
            "25000",
            "50000",
        )
        assert live.findtext("devices/disk/iotune/read_bytes_sec") == "1048576"
        assert live.findtext("devices/disk/iotune/write_iops_sec") == "30"

        [current] = await agent.call("VM.getIoTune", [vm_id])
        assert current["name"] == "vda" and current["path"] == str(disk)
        assert current["ioTune"] == limits

        async def stats():
            [vm_stats] = await agent.call("VM.getStats", [vm_id])
            return vm_stats

        reported = await eventually(stats, lambda s: s.get("vcpuQuota") == "25000", 10)
        assert reported["vcpuPeriod"] == "50000"
        assert reported["ioTune"] == [current]

        with pytest.raises(RemoteError) as refused:
            await agent.call("VM.setCpuTunePeriod", [vm_id, 999])
        assert refused.value.code == 62 and "out of range [1000, 1000000]" in refused.value.message
        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(25000, 50000, 1)
    finally:
        try:
            await agent.call("VM.destroy", [vm_id])
        finally:
            await agent.stop()
