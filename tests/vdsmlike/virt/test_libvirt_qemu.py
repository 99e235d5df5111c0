"""LibvirtHypervisor on the embedded QEMU driver with the real test guest (TCG).

All tests share the session's ``embedded_root`` (one embedded root per process). Most contract
tests only start QEMU; the ones that need the guest's kernel (balloon, ACPI) wait for it to boot.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from contracts.hypervisor import HypervisorContract, sleep, wait_until
from defusedxml import ElementTree
from guests import READY_MARKER, guest_xml, last_tick, serial_text
from twisted.internet import reactor

from vdsmlike.virt.events import DomainState, LifecycleEvent, StoppedDetail
from vdsmlike.virt.libvirt import LibvirtHypervisor
from vdsmlike.virt.runner import ThreadPoolRunner

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

BOOT_TIMEOUT = 60.0


@pytest.fixture
def embedded_uri(guest_image: Path, embedded_root: Path) -> str:
    """The URI of the session's embedded QEMU driver (the guest image built first)."""
    return f"qemu:///embed?root={embedded_root}"


class TestLibvirtQemu(HypervisorContract):
    """The IHypervisor contract on embedded QEMU, with real guests."""

    @pytest_twisted.async_yield_fixture
    async def hypervisor(self, embedded_uri: str, guest_image: Path, embedded_root: Path) -> Any:
        self.image, self.root = guest_image, embedded_root
        runner = ThreadPoolRunner(reactor, max_threads=4)
        runner.start()
        hypervisor = LibvirtHypervisor(embedded_uri, runner, reactor)
        await hypervisor.open()
        yield hypervisor
        for domain in await hypervisor.list_domains():
            await hypervisor.destroy(domain.vm_id, False)
        await hypervisor.close()
        await runner.stop()

    @pytest.fixture(autouse=True)
    def guest_paths(self, guest_image: Path, embedded_root: Path) -> None:
        self.image, self.root = guest_image, embedded_root

    def serial(self, vm_id: str) -> Path:
        return self.root / f"{vm_id}.serial"

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        vm_id = vm_id or str(uuid.uuid4())
        return guest_xml(self.image, self.serial(vm_id), name=name, vm_id=vm_id)

    def disk_xml(self) -> str:
        image = self.root / f"vdb-{uuid.uuid4().hex[:8]}.img"
        image.write_bytes(bytes(1024 * 1024))
        return (
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{image}'/><target dev='vdb' bus='virtio'/></disk>"
        )

    async def wait_guest_ready(self, vm_id: str) -> None:
        # One tick after the marker: the power button watcher is listening by then.
        await wait_until(lambda: (last_tick(self.serial(vm_id)) or 0) >= 1, BOOT_TIMEOUT)

    @pytest_twisted.ensureDeferred
    async def test_real_guest(self, hypervisor: LibvirtHypervisor) -> None:
        """A real guest boots, reports balloon figures, shrinks, pauses, resumes, powers off."""
        started = time.monotonic()
        vm_id = (await self.start(hypervisor)).vm_id
        serial = self.serial(vm_id)
        await wait_until(lambda: READY_MARKER in serial_text(serial), BOOT_TIMEOUT)
        print(f"guest ready {time.monotonic() - started:.2f} s after create")

        stats = await self.guest_stats(hypervisor, vm_id)
        assert stats["balloon.current"] == stats["balloon.maximum"] == 192 * 1024
        unused_before = stats["balloon.unused"]

        await hypervisor.set_memory(vm_id, 128 * 1024)
        await wait_until(lambda: True)
        stats = await self.guest_stats(
            hypervisor, vm_id, lambda s: s["balloon.unused"] < unused_before - 32 * 1024
        )
        assert stats["balloon.current"] == 128 * 1024

        await hypervisor.suspend(vm_id)
        paused_at = last_tick(serial)
        await sleep(2.5)
        assert last_tick(serial) == paused_at
        await hypervisor.resume(vm_id)
        await wait_until(lambda: (last_tick(serial) or 0) > (paused_at or 0), 10)

        stopping = time.monotonic()
        await hypervisor.shutdown(vm_id)
        await wait_until(
            lambda: (LifecycleEvent.STOPPED, StoppedDetail.SHUTDOWN) in self.events_of(vm_id), 30
        )
        print(f"guest powered off {time.monotonic() - stopping:.2f} s after shutdown()")
        assert "VDSMLIKE-GUEST-POWEROFF" in serial_text(serial)

    async def guest_stats(
        self, hypervisor: LibvirtHypervisor, vm_id: str, accept: Any = lambda s: True
    ) -> dict[str, Any]:
        """Poll bulk_stats until the guest reported balloon figures that ``accept`` likes."""
        for _ in range(100):
            stats = (await hypervisor.bulk_stats()).get(vm_id, {})
            if "balloon.unused" in stats and accept(stats):
                return stats
            await sleep(0.2)
        raise AssertionError(f"no acceptable balloon stats for {vm_id}: {stats}")

    @pytest_twisted.ensureDeferred
    async def test_recovered_after_reopen(
        self, hypervisor: LibvirtHypervisor, embedded_uri: str
    ) -> None:
        """A guest outlives our connection; reopened, we list it and it obeys."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.close()
        await hypervisor.open()
        listed = {d.vm_id: d for d in await hypervisor.list_domains()}
        assert listed[vm_id].state == DomainState.RUNNING
        await hypervisor.suspend(vm_id)
        await hypervisor.set_memory(vm_id, 160 * 1024)
        await hypervisor.resume(vm_id)
        await hypervisor.destroy(vm_id, False)
        assert vm_id not in {d.vm_id for d in await hypervisor.list_domains()}

    @pytest_twisted.ensureDeferred
    async def test_tuning_reaches_the_live_domain(self, hypervisor: LibvirtHypervisor) -> None:
        """CPU bandwidth and disk limits show in libvirt's live XML (QEMU's cgroup and
        throttle group), not only in what the adapter reads back."""
        vm_id = await self.start_with_disk(hypervisor)
        await hypervisor.set_cpu_tune(vm_id, 30000, 150000)
        await hypervisor.set_block_io_tune(
            vm_id, "vdb", {"read_bytes_sec": 2_000_000, "write_iops_sec": 40}
        )
        root = ElementTree.fromstring(await hypervisor.get_xml(vm_id))
        assert root.findtext("cputune/quota") == "30000"
        assert root.findtext("cputune/period") == "150000"
        [disk] = [d for d in root.findall("devices/disk") if d.find("target").get("dev") == "vdb"]
        assert disk.findtext("iotune/read_bytes_sec") == "2000000"
        assert disk.findtext("iotune/write_iops_sec") == "40"
        assert disk.find("iotune/total_bytes_sec") is None
