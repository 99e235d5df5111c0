"""The embedded MOM with the default policy set on two real guests (QEMU, TCG): when a policy
parameter makes the host count as short of memory, the guests' balloons really shrink (libvirt's
``actual`` and the guests' own unused memory drop); when it is lifted, they grow back."""

from __future__ import annotations

import shutil
import tempfile

import pytest
import pytest_twisted
from agent_harness import eventually, wait_until
from guests import READY_MARKER
from test_agent_qemu import Session, guest_params, stats_of

from vdsmlike.agentproc import AgentProcess, kill_guests_under

pytestmark = [pytest.mark.slow, pytest.mark.qemu]
MIB = 1024


@pytest.fixture
def workdir():
    """A short directory: QEMU's monitor socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="vla-", dir="/tmp")
    yield path
    kill_guests_under(path)
    shutil.rmtree(path, ignore_errors=True)


class MomSession(Session):
    """An agent process whose MOM cycles every second."""

    def __init__(self, workdir: str):
        super().__init__(workdir)
        self.proc = AgentProcess(
            workdir,
            libvirt_uri=f"qemu:///embed?root={workdir}/root",
            vm_sample_interval=1.0,
            host_sample_interval=1.0,
            guest_wait_timeout=2.0,
            mom={"policy_interval": 1, "host_interval": 1, "guest_interval": 1},
        )


async def memory(session, vm_ids) -> dict[str, tuple[int, int]]:
    """Per VM: libvirt's current balloon size and the guest's unused memory (KiB; -1 unknown)."""
    found = {}
    for vm_id in vm_ids:
        stats = await stats_of(session, vm_id)
        current = int((stats.get("balloonInfo") or {}).get("balloon_cur", -1))
        unused = int((stats.get("memoryStats") or {}).get("mem_unused", -1))
        found[vm_id] = (current, unused)
    return found


@pytest_twisted.ensureDeferred
async def test_memory_pressure_shrinks_real_balloons_and_relief_grows_them(workdir, guest_image):
    """Under (parameter-made) host memory pressure both guests give memory back, as libvirt
    and the guests themselves report; once the pressure is lifted they grow back."""
    session = await MomSession(workdir).start()
    try:
        guests = [guest_params(guest_image, memory_mib=256) for _ in range(2)]
        vm_ids = [g["vmId"] for g in guests]
        for params in guests:
            await session.client.call("VM.create", {"vmParams": params})
        for vm_id in vm_ids:
            serial = session.serial(vm_id)
            await wait_until(
                lambda s=serial: s.exists() and READY_MARKER in s.read_text(), 60, "boot"
            )
            await session.wait_status(vm_id, "Up")
        full = 256 * MIB
        before = await eventually(
            lambda: memory(session, vm_ids),
            lambda m: all(c == full and u > 0 for c, u in m.values()),
            60,
            0.5,
        )

        pressure = {"balloonEnabled": True, "balloonHostFreeThreshold": 1.01}
        assert await session.client.call("Host.setMOMPolicyParameters", [pressure]) is True
        shrunk = await eventually(
            lambda: memory(session, vm_ids),
            lambda m: all(
                c <= 0.8 * full and 0 < u < before[v][1] - 20 * MIB for v, (c, u) in m.items()
            ),
            90,
            1.0,
        )
        assert all(c >= full // 2 for c, _ in shrunk.values()), "the floor is half the memory"

        relief = {"balloonHostFreeThreshold": 0.0}
        assert await session.client.call("Host.setMOMPolicyParameters", [relief]) is True
        await eventually(
            lambda: memory(session, vm_ids),
            lambda m: all(c >= 0.95 * full for c, _ in m.values()),
            90,
            1.0,
        )
        stats = await session.client.call("Host.getStats")
        assert stats["momStatus"] == "active"
        for vm_id in vm_ids:
            await session.client.call("VM.destroy", [vm_id])
    finally:
        await session.stop()
