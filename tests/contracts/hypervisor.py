"""The IHypervisor contract: one suite, mixed into one test class per implementation.

A class using :class:`HypervisorContract` provides:

- an async fixture ``hypervisor`` yielding an opened implementation and destroying what the
  test created afterwards (its events go to ``self.events``);
- :meth:`new_xml` returning domain XML for a new domain of that hypervisor;
- optionally :meth:`wait_guest_ready`, for guests that must boot before they obey ACPI;
- optionally :meth:`disk_xml`, a ``<disk>`` (target ``vdb``) the hypervisor can run with, for
  the block IO tuning tests.

Tests run on the real reactor (pytest-twisted): libvirt delivers events from its own thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from defusedxml import ElementTree
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from vdsmlike.interfaces import IHypervisor
from vdsmlike.virt.errors import DomainExists, DomainNotFound, HypervisorError
from vdsmlike.virt.events import (
    METADATA_NS,
    CpuTune,
    DomainEvent,
    DomainInfo,
    DomainState,
    HostInfo,
    LifecycleEvent,
    StoppedDetail,
)
from vdsmlike.virt.tuning import IO_TUNE_KEYS

STATS_KEYS = ("state.state", "cpu.time", "balloon.current", "balloon.maximum", "vcpu.current")


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.05
) -> Any:
    """Poll ``predicate`` on the real reactor until it is truthy; fail after ``timeout`` s."""
    for _ in range(int(timeout / step)):
        value = predicate()
        if value:
            return value
        await sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


async def sleep(seconds: float) -> None:
    """Let the real reactor run for ``seconds``."""
    from twisted.internet import reactor

    await deferLater(reactor, seconds, lambda: None)


async def failure_of(d: Any, error_type: type[Exception]) -> Exception:
    """Await ``d`` and return the exception it failed with; fail if it succeeded or differed."""
    try:
        await d
    except error_type as e:
        return e
    raise AssertionError(f"expected {error_type.__name__}, the call succeeded")


class HypervisorContract:
    """Behaviour every IHypervisor shows; see the module docstring for what a user provides."""

    events: list[DomainEvent]

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        """Domain XML for a new domain (override)."""
        raise NotImplementedError

    async def wait_guest_ready(self, vm_id: str) -> None:
        """Wait until the guest listens to ACPI (override for real guests)."""

    def disk_xml(self) -> str:
        """A ``<disk>`` with target ``vdb`` (override where the image must exist)."""
        return (
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            "<source file='/var/tmp/vl-contract-vdb.img'/><target dev='vdb' bus='virtio'/></disk>"
        )

    @pytest.fixture(autouse=True)
    def record_events(self, hypervisor: Any) -> None:
        """Send ``hypervisor``'s events to ``self.events``."""
        self.events = []
        hypervisor.set_event_listener(self.events.append)

    def events_of(self, vm_id: str) -> list[tuple[Any, int]]:
        """The ``(kind, detail)`` of the events recorded for ``vm_id``, in order."""
        return [(e.kind, e.detail) for e in self.events if e.vm_id == vm_id]

    async def start(self, hypervisor: Any, **kwargs: Any) -> DomainInfo:
        """Create a running domain from :meth:`new_xml`."""
        return await hypervisor.create(self.new_xml(**kwargs), False)

    async def start_with_disk(self, hypervisor: Any) -> str:
        """Create a running domain with :meth:`disk_xml` as disk ``vdb``; :returns: its id."""
        xml = self.new_xml().replace("<devices>", "<devices>" + self.disk_xml(), 1)
        return (await hypervisor.create(xml, False)).vm_id

    def test_provides_interface(self, hypervisor: Any) -> None:
        """The implementation provides IHypervisor, signatures included."""
        assert verifyObject(IHypervisor, hypervisor)

    @pytest_twisted.ensureDeferred
    async def test_host_info(self, hypervisor: Any) -> None:
        """host_info describes a host with CPUs, memory and a hypervisor type."""
        info = await hypervisor.host_info()
        assert isinstance(info, HostInfo)
        assert info.cpus > 0 and info.memory_kib > 0 and info.hv_type

    @pytest_twisted.ensureDeferred
    async def test_create_lists_running_domain(self, hypervisor: Any) -> None:
        """A created domain runs and is listed with its name, state and XML."""
        vm_id = str(uuid.uuid4())
        info = await self.start(hypervisor, vm_id=vm_id)
        assert (info.vm_id, info.state) == (vm_id, DomainState.RUNNING)
        listed = {d.vm_id: d for d in await hypervisor.list_domains()}
        assert listed[vm_id].name == info.name
        assert listed[vm_id].state == DomainState.RUNNING
        assert vm_id in listed[vm_id].xml

    @pytest_twisted.ensureDeferred
    async def test_create_paused(self, hypervisor: Any) -> None:
        """A domain created paused is listed as paused."""
        info = await hypervisor.create(self.new_xml(), True)
        assert info.state == DomainState.PAUSED
        listed = {d.vm_id: d for d in await hypervisor.list_domains()}
        assert listed[info.vm_id].state == DomainState.PAUSED

    @pytest_twisted.ensureDeferred
    async def test_suspend_resume(self, hypervisor: Any) -> None:
        """suspend pauses a domain and resume runs it again."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.suspend(vm_id)
        states = {d.vm_id: d.state for d in await hypervisor.list_domains()}
        assert states[vm_id] == DomainState.PAUSED
        await hypervisor.resume(vm_id)
        states = {d.vm_id: d.state for d in await hypervisor.list_domains()}
        assert states[vm_id] == DomainState.RUNNING

    @pytest_twisted.ensureDeferred
    async def test_set_memory(self, hypervisor: Any) -> None:
        """set_memory moves the balloon: bulk_stats report the new current memory."""
        vm_id = (await self.start(hypervisor)).vm_id
        await self.wait_guest_ready(vm_id)
        await hypervisor.set_memory(vm_id, 96 * 1024)

        for _ in range(100):
            current = (await hypervisor.bulk_stats())[vm_id]["balloon.current"]
            if current == 96 * 1024:
                break
            await sleep(0.1)
        assert current == 96 * 1024

    @pytest_twisted.ensureDeferred
    async def test_metadata_round_trip(self, hypervisor: Any) -> None:
        """Metadata set on a domain comes back in its live XML, in our namespace."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.set_metadata(vm_id, "<vm><launch>7</launch></vm>")
        await hypervisor.set_metadata(vm_id, "<vm><launch>8</launch></vm>")
        root = ElementTree.fromstring(await hypervisor.get_xml(vm_id))
        ours = root.findall(f"metadata/{{{METADATA_NS}}}vm")
        assert len(ours) == 1
        assert ours[0].findtext(f"{{{METADATA_NS}}}launch") == "8"

    @pytest_twisted.ensureDeferred
    async def test_destroy_removes_domain(self, hypervisor: Any) -> None:
        """A destroyed transient domain is gone: unlisted, and unknown afterwards."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.destroy(vm_id, False)
        assert vm_id not in {d.vm_id for d in await hypervisor.list_domains()}
        await failure_of(hypervisor.get_xml(vm_id), DomainNotFound)

    @pytest_twisted.ensureDeferred
    async def test_graceful_destroy(self, hypervisor: Any) -> None:
        """A graceful destroy also stops the domain."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.destroy(vm_id, True)
        assert vm_id not in {d.vm_id for d in await hypervisor.list_domains()}

    @pytest_twisted.ensureDeferred
    async def test_events_in_order(self, hypervisor: Any) -> None:
        """Create, suspend, resume and destroy are reported in that order, in the reactor."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.suspend(vm_id)
        await hypervisor.resume(vm_id)
        await hypervisor.destroy(vm_id, False)
        stopped = (LifecycleEvent.STOPPED, StoppedDetail.DESTROYED)
        await wait_until(lambda: stopped in self.events_of(vm_id))
        # QEMU reports RESUMED (leaving its -S start) before STARTED, and SHUTDOWN/HOST
        # before STOPPED on a destroy; the order of the rest is the contract.
        kinds = [kind for kind, _ in self.events_of(vm_id) if kind != LifecycleEvent.SHUTDOWN]
        first = kinds.index(LifecycleEvent.STARTED)
        assert set(kinds[:first]) <= {LifecycleEvent.RESUMED}, self.events_of(vm_id)
        assert kinds[first:] == [
            LifecycleEvent.STARTED,
            LifecycleEvent.SUSPENDED,
            LifecycleEvent.RESUMED,
            LifecycleEvent.STOPPED,
        ], self.events_of(vm_id)

    @pytest_twisted.ensureDeferred
    async def test_shutdown_stops_domain(self, hypervisor: Any) -> None:
        """After shutdown the guest powers off: STOPPED/SHUTDOWN and the domain is gone."""
        vm_id = (await self.start(hypervisor)).vm_id
        await self.wait_guest_ready(vm_id)
        await hypervisor.shutdown(vm_id)
        await wait_until(lambda: (LifecycleEvent.STOPPED, 0) in self.events_of(vm_id), 30)
        assert vm_id not in {d.vm_id for d in await hypervisor.list_domains()}

    @pytest_twisted.ensureDeferred
    async def test_unknown_domain(self, hypervisor: Any) -> None:
        """Every per-domain call on an unknown id fails with DomainNotFound naming it."""
        vm_id = str(uuid.uuid4())
        calls = [
            hypervisor.destroy(vm_id, False),
            hypervisor.shutdown(vm_id),
            hypervisor.reboot(vm_id),
            hypervisor.reset(vm_id),
            hypervisor.suspend(vm_id),
            hypervisor.resume(vm_id),
            hypervisor.set_memory(vm_id, 65536),
            hypervisor.get_xml(vm_id),
            hypervisor.set_metadata(vm_id, "<vm/>"),
            hypervisor.attach_device(vm_id, "<watchdog model='i6300esb'/>"),
            hypervisor.detach_device(vm_id, "<watchdog model='i6300esb'/>"),
            hypervisor.get_cpu_tune(vm_id),
            hypervisor.set_cpu_tune(vm_id, 50000, 100000),
            hypervisor.get_block_io_tune(vm_id, "vda"),
            hypervisor.set_block_io_tune(vm_id, "vda", {"total_bytes_sec": 1000}),
        ]
        for d in calls:
            error = await failure_of(d, DomainNotFound)
            assert error.vm_id == vm_id  # type: ignore[attr-defined]

    @pytest_twisted.ensureDeferred
    async def test_duplicate_uuid(self, hypervisor: Any) -> None:
        """Creating a second domain with a used UUID fails with DomainExists."""
        first = await self.start(hypervisor)
        await failure_of(hypervisor.create(self.new_xml(vm_id=first.vm_id), False), DomainExists)
        assert [d.name for d in await hypervisor.list_domains() if d.vm_id == first.vm_id] == [
            first.name
        ]

    @pytest_twisted.ensureDeferred
    async def test_duplicate_name(self, hypervisor: Any) -> None:
        """Creating a second domain with a used name fails with DomainExists."""
        first = await self.start(hypervisor)
        other = str(uuid.uuid4())
        await failure_of(
            hypervisor.create(self.new_xml(name=first.name, vm_id=other), False), DomainExists
        )
        assert other not in {d.vm_id for d in await hypervisor.list_domains()}

    @pytest_twisted.ensureDeferred
    async def test_failed_create_leaves_nothing(self, hypervisor: Any) -> None:
        """A create refused for bad XML fails with HypervisorError and leaves nothing behind."""
        before = {d.vm_id for d in await hypervisor.list_domains()}
        vm_id = str(uuid.uuid4())
        broken = self.new_xml(vm_id=vm_id).replace("<memory unit='MiB'>", "<memory unit='zz'>")
        await failure_of(hypervisor.create(broken, False), HypervisorError)
        await failure_of(hypervisor.create("<domain", False), HypervisorError)
        assert {d.vm_id for d in await hypervisor.list_domains()} == before

    @pytest_twisted.ensureDeferred
    async def test_bulk_stats_keys(self, hypervisor: Any) -> None:
        """bulk_stats samples running and paused domains with libvirt's flat keys."""
        running = (await self.start(hypervisor)).vm_id
        paused = (await hypervisor.create(self.new_xml(), True)).vm_id
        stats = await hypervisor.bulk_stats()
        for vm_id in (running, paused):
            assert set(STATS_KEYS) <= set(stats[vm_id])
        assert stats[running]["state.state"] == DomainState.RUNNING.value
        assert stats[paused]["state.state"] == DomainState.PAUSED.value
        assert stats[running]["balloon.maximum"] >= stats[running]["balloon.current"] > 0

    # -- tuning

    @pytest_twisted.ensureDeferred
    async def test_cpu_tune_of_a_new_domain(self, hypervisor: Any) -> None:
        """A new domain has an unlimited quota, a 100 ms period and its vCPU count."""
        vm_id = (await self.start(hypervisor)).vm_id
        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(quota=-1, period=100000, vcpus=1)

    @pytest_twisted.ensureDeferred
    async def test_set_cpu_tune(self, hypervisor: Any) -> None:
        """Quota and period apply live; None and 0 leave a value alone; negative is unlimited."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.set_cpu_tune(vm_id, 50000, 200000)
        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(50000, 200000, 1)
        await hypervisor.set_cpu_tune(vm_id, quota=25000)
        await hypervisor.set_cpu_tune(vm_id, 0, 0)
        await hypervisor.set_cpu_tune(vm_id)
        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(25000, 200000, 1)
        await hypervisor.set_cpu_tune(vm_id, quota=-7, period=1000000)
        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(-1, 1000000, 1)

    @pytest_twisted.ensureDeferred
    async def test_cpu_tune_out_of_range_is_refused(self, hypervisor: Any) -> None:
        """A quota or period outside libvirt's ranges fails with HypervisorError, changing
        nothing."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.set_cpu_tune(vm_id, 40000, 100000)
        for quota, period in ((500, None), (2**50, None), (None, 999), (None, 2**40), (None, -1)):
            error = await failure_of(hypervisor.set_cpu_tune(vm_id, quota, period), HypervisorError)
            assert not isinstance(error, DomainNotFound)
        assert await hypervisor.get_cpu_tune(vm_id) == CpuTune(40000, 100000, 1)

    @pytest_twisted.ensureDeferred
    async def test_block_io_tune_round_trip(self, hypervisor: Any) -> None:
        """A disk starts unlimited; set limits read back, and keys left out become 0."""
        vm_id = await self.start_with_disk(hypervisor)
        assert await hypervisor.get_block_io_tune(vm_id, "vdb") == dict.fromkeys(IO_TUNE_KEYS, 0)
        await hypervisor.set_block_io_tune(
            vm_id, "vdb", {"total_bytes_sec": 10_000_000, "read_iops_sec": 100}
        )
        expected = dict.fromkeys(IO_TUNE_KEYS, 0) | {
            "total_bytes_sec": 10_000_000,
            "read_iops_sec": 100,
        }
        assert await hypervisor.get_block_io_tune(vm_id, "vdb") == expected
        await hypervisor.set_block_io_tune(vm_id, "vdb", {"write_iops_sec": 300})
        expected = dict.fromkeys(IO_TUNE_KEYS, 0) | {"write_iops_sec": 300}
        assert await hypervisor.get_block_io_tune(vm_id, "vdb") == expected

    @pytest_twisted.ensureDeferred
    async def test_block_io_tune_refusals(self, hypervisor: Any) -> None:
        """Unknown disks and keys, negative or huge values and a total with a read limit fail
        with HypervisorError, changing nothing."""
        vm_id = await self.start_with_disk(hypervisor)
        await hypervisor.set_block_io_tune(vm_id, "vdb", {"total_iops_sec": 50})
        before = await hypervisor.get_block_io_tune(vm_id, "vdb")
        await failure_of(hypervisor.get_block_io_tune(vm_id, "vdz"), HypervisorError)
        for device, values in (
            ("vdz", {"total_iops_sec": 5}),
            ("vdb", {"total_iops_sec": 5, "bogus": 1}),
            ("vdb", {"read_bytes_sec": -1}),
            ("vdb", {"read_bytes_sec": 10**16}),
            ("vdb", {"total_bytes_sec": 5, "read_bytes_sec": 3}),
        ):
            error = await failure_of(
                hypervisor.set_block_io_tune(vm_id, device, values), HypervisorError
            )
            assert not isinstance(error, DomainNotFound), (device, values)
        assert await hypervisor.get_block_io_tune(vm_id, "vdb") == before
