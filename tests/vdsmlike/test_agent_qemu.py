"""Real guests through the real agent daemon: QEMU (TCG) via the embedded libvirt driver.

The agent runs as a child process (``vdsmlike-agent``), is talked to over WebSocket, and is
stopped with SIGTERM; the guest is the busybox test image printing ``tick N`` every second.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from agent_harness import eventually, wait_until
from guests import READY_MARKER
from twisted.internet import reactor
from twisted.internet.task import deferLater

from vdsmlike.agentproc import AgentProcess, connect_when_ready, kill_guests_under

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest.fixture
def workdir():
    """A short directory: QEMU's monitor socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="vla-", dir="/tmp")
    yield path
    kill_guests_under(path)
    shutil.rmtree(path, ignore_errors=True)


def ticks(serial: Path) -> list[int]:
    """The guest's counter lines so far."""
    try:
        text = serial.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


class Session:
    """One agent process and one subscribed client."""

    def __init__(self, workdir: str):
        self.proc = AgentProcess(
            workdir,
            libvirt_uri=f"qemu:///embed?root={workdir}/root",
            validate_results=True,
            vm_sample_interval=1.0,
            host_sample_interval=1.0,
            guest_wait_timeout=2.0,
        )
        self.statuses: dict[str, list[str]] = {}

    async def start(self):
        url = await self.proc.start(reactor)
        self.client = await connect_when_ready(reactor, url)
        self.client.on_event(self._event)
        await self.client.subscribe(["|virt|VM_status|*"])
        return self

    def _event(self, event_id, params):
        for key, value in params.items():
            if isinstance(value, dict) and "status" in value:
                self.statuses.setdefault(key, []).append(value["status"])

    async def wait_status(self, vm_id, status, timeout=60.0):
        await wait_until(lambda: status in self.statuses.get(vm_id, []), timeout, status)

    def serial(self, vm_id) -> Path:
        return Path(self.proc.state_dir) / "serial" / f"{vm_id}.log"

    async def stop(self):
        await self.client.close()
        assert await self.proc.stop(reactor) == 0


def guest_params(image: Path, memory_mib: int = 192) -> dict:
    vm_id = str(uuid.uuid4())
    return {
        "vmId": vm_id,
        "vmName": "g-" + vm_id[:8],
        "memSize": memory_mib,
        "kernel": str(image / "vmlinuz"),
        "initrd": str(image / "initrd.img"),
        "kernelArgs": "console=ttyS0 quiet",
    }


async def stats_of(session, vm_id):
    [stats] = await session.client.call("VM.getStats", [vm_id])
    return stats


@pytest_twisted.ensureDeferred
async def test_real_guest_boots_pauses_balloons_and_shuts_down(workdir, guest_image):
    """A real guest boots with its before_vm_start hook's edit, stops ticking while paused,
    gives memory to the balloon, takes a hot-plugged NIC, and powers off on request."""
    describe = Path(workdir) / "state" / "hooks" / "before_vm_start" / "50_describe"
    describe.parent.mkdir(parents=True)
    describe.write_text(
        f"#!{sys.executable}\nimport hooking\ndom = hooking.read_domxml()\n"
        "d = dom.createElement('description')\nd.appendChild(dom.createTextNode('hooked'))\n"
        "dom.documentElement.appendChild(d)\nhooking.write_domxml(dom)\n"
    )
    describe.chmod(0o755)
    session = await Session(workdir).start()
    try:
        params = guest_params(guest_image)
        vm_id = params["vmId"]
        await session.client.call("VM.create", {"vmParams": params})
        serial = session.serial(vm_id)
        await wait_until(lambda: serial.exists() and READY_MARKER in serial.read_text(), 60, "boot")
        await session.wait_status(vm_id, "Up")
        live = (await session.client.call("Host.dumpxmls", [[vm_id]]))["domxmls"][vm_id]
        assert "<description>hooked</description>" in live, "the hook's edit is what QEMU runs"

        await session.client.call("VM.pause", [vm_id])
        await session.wait_status(vm_id, "Paused")
        frozen = len(ticks(serial))
        await deferLater(reactor, 2.5, lambda: None)
        assert len(ticks(serial)) == frozen
        await session.client.call("VM.cont", [vm_id])
        await wait_until(lambda: len(ticks(serial)) > frozen + 1, 10, "ticks after cont")

        before = await _unused_kib(session, vm_id)
        await session.client.call("VM.setBalloonTarget", {"vmID": vm_id, "target": 128 * 1024})
        await eventually(
            lambda: _unused_kib(session, vm_id), lambda v: v < before - 40 * 1024, 30, 0.5
        )
        info = (await stats_of(session, vm_id))["balloonInfo"]
        assert info["balloon_target"] == str(128 * 1024)

        nic = (
            "<devices><interface type='user'><mac address='52:54:00:12:34:56'/>"
            "</interface></devices>"
        )
        [before] = await session.client.call("VM.getStats", [vm_id])
        plugged = await session.client.call(
            "VM.hotplugNic", {"vmID": vm_id, "params": {"xml": nic}}
        )
        assert "52:54:00:12:34:56" in plugged["vmList"]["xml"]
        [after] = await session.client.call("VM.getStats", [vm_id])
        assert after["hash"] != before["hash"]

        await session.client.call("VM.shutdown", {"vmID": vm_id, "timeout": 60})
        await session.wait_status(vm_id, "Down")
        stats = await stats_of(session, vm_id)
        assert (stats["exitCode"], stats["exitReason"]) == (0, 6)
        assert session.statuses[vm_id][-2:] == ["Powering down", "Down"]
        await session.client.call("VM.destroy", [vm_id])
        assert vm_id not in await session.client.call("Host.getVMList")
    finally:
        await session.stop()


async def _unused_kib(session, vm_id) -> int:
    stats = await stats_of(session, vm_id)
    return int(stats.get("memoryStats", {}).get("mem_unused", "0"))


@pytest_twisted.ensureDeferred
async def test_guest_keeps_running_across_an_agent_restart(workdir, guest_image):
    """SIGTERM leaves the guest running; the next agent recovers it and can control it."""
    session = await Session(workdir).start()
    params = guest_params(guest_image, memory_mib=224)
    vm_id = params["vmId"]
    try:
        await session.client.call("VM.create", {"vmParams": params})
        await session.wait_status(vm_id, "Up")
        await wait_until(lambda: len(ticks(session.serial(vm_id))) > 0, 60, "ticks")
        await session.client.call("VM.setBalloonTarget", [vm_id, 192 * 1024])
    finally:
        await session.stop()
    serial = session.serial(vm_id)
    during = len(ticks(serial))
    await wait_until(lambda: len(ticks(serial)) > during + 1, 10, "ticks while no agent runs")

    again = await Session(workdir).start()
    try:
        listed = await again.client.call("Host.getVMList", {"onlyUUID": False})
        assert {"vmId": vm_id, "status": "Up"} in listed
        stats = await stats_of(again, vm_id)
        assert stats["balloonInfo"]["balloon_target"] == str(192 * 1024)
        assert int(stats["elapsedTime"]) >= 1
        seq = ticks(serial)
        assert seq == list(range(seq[0], seq[0] + len(seq))), "the guest never rebooted"
        await again.client.call("VM.pause", [vm_id])
        await again.wait_status(vm_id, "Paused")
        await again.client.call("VM.setBalloonTarget", [vm_id, 160 * 1024])
        await again.client.call("VM.destroy", [vm_id])
        await again.wait_status(vm_id, "Down")
        assert vm_id not in await again.client.call("Host.getVMList")
    finally:
        await again.stop()
