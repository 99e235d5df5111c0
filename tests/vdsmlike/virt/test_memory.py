"""MemoryHypervisor: the IHypervisor contract, its test knobs, and both delivery modes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from contracts.hypervisor import HypervisorContract
from guests import bare_xml
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vdsmlike.virt.errors import DomainNotFound, HypervisorError
from vdsmlike.virt.events import DomainEvent, DomainState, LifecycleEvent, StoppedDetail
from vdsmlike.virt.memory import SHUTDOWN_DELAY, MemoryHypervisor


class TestMemoryHypervisorContract(HypervisorContract):
    """The IHypervisor contract on MemoryHypervisor, delivering events on the real reactor."""

    @pytest_twisted.async_yield_fixture
    async def hypervisor(self) -> Any:
        hypervisor = MemoryHypervisor(reactor)
        await hypervisor.open()
        yield hypervisor
        for domain in await hypervisor.list_domains():
            await hypervisor.destroy(domain.vm_id, False)
        await hypervisor.close()

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        return bare_xml(name=name, vm_id=vm_id)


class MemoryHypervisorClockTests(SynchronousTestCase):
    """MemoryHypervisor driven by a Clock: events on ``advance(0)``, shutdowns after a delay."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.hypervisor = MemoryHypervisor(self.clock)
        self.events: list[DomainEvent] = []
        self.hypervisor.set_event_listener(self.events.append)
        self.vm_id = str(uuid.uuid4())
        self.successResultOf(self.hypervisor.create(bare_xml(vm_id=self.vm_id), False))

    def tearDown(self) -> None:
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def kinds(self) -> list[Any]:
        return [(e.kind, e.detail) for e in self.events]

    def test_events_wait_for_the_reactor(self) -> None:
        """Events are queued until the clock runs, then delivered in order."""
        self.successResultOf(self.hypervisor.suspend(self.vm_id))
        self.assertEqual(self.events, [])
        self.clock.advance(0)
        self.assertEqual(self.kinds(), [(LifecycleEvent.STARTED, 0), (LifecycleEvent.SUSPENDED, 0)])

    def test_shutdown_after_delay(self) -> None:
        """shutdown stops the domain SHUTDOWN_DELAY later, with SHUTDOWN then STOPPED/SHUTDOWN."""
        self.successResultOf(self.hypervisor.shutdown(self.vm_id))
        self.clock.advance(0)
        self.assertIn(self.vm_id, self.hypervisor.domains)
        self.clock.advance(SHUTDOWN_DELAY)
        self.clock.advance(0)
        self.assertNotIn(self.vm_id, self.hypervisor.domains)
        self.assertEqual(
            self.kinds()[-2:],
            [(LifecycleEvent.SHUTDOWN, 0), (LifecycleEvent.STOPPED, StoppedDetail.SHUTDOWN)],
        )

    def test_destroy_cancels_pending_shutdown(self) -> None:
        """A destroy during a pending shutdown leaves no delayed call and one STOPPED."""
        self.successResultOf(self.hypervisor.shutdown(self.vm_id))
        self.successResultOf(self.hypervisor.destroy(self.vm_id, True))
        self.clock.advance(0)
        self.assertEqual(
            [k for k in self.kinds() if k[0] == LifecycleEvent.STOPPED],
            [(LifecycleEvent.STOPPED, StoppedDetail.DESTROYED)],
        )

    def test_guest_ignores_shutdown(self) -> None:
        """A guest told to ignore ACPI keeps running after shutdown."""
        self.hypervisor.guest_ignores_shutdown(self.vm_id)
        self.successResultOf(self.hypervisor.shutdown(self.vm_id))
        self.clock.advance(10)
        self.assertIn(self.vm_id, self.hypervisor.domains)

    def test_crash(self) -> None:
        """crash removes the domain with STOPPED/CRASHED."""
        self.hypervisor.crash(self.vm_id)
        self.clock.advance(0)
        self.assertEqual(self.kinds()[-1], (LifecycleEvent.STOPPED, StoppedDetail.CRASHED))
        self.failureResultOf(self.hypervisor.get_xml(self.vm_id), DomainNotFound)

    def test_fail_next(self) -> None:
        """An injected error fails the next call of that method only."""
        self.hypervisor.fail_next("suspend", HypervisorError("boom"))
        self.failureResultOf(self.hypervisor.suspend(self.vm_id), HypervisorError)
        self.successResultOf(self.hypervisor.suspend(self.vm_id))

    def test_fail_next_create_leaves_nothing(self) -> None:
        """An injected create failure defines nothing."""
        self.hypervisor.fail_next("create", HypervisorError("no"))
        self.failureResultOf(self.hypervisor.create(bare_xml(), False), HypervisorError)
        self.assertEqual(list(self.hypervisor.domains), [self.vm_id])

    def test_reboot_and_reset_events(self) -> None:
        """reboot and reset report libvirt's reboot event and keep the domain running."""
        self.successResultOf(self.hypervisor.reboot(self.vm_id))
        self.successResultOf(self.hypervisor.reset(self.vm_id))
        self.clock.advance(0)
        self.assertEqual(self.kinds()[-2:], [("reboot", 0), ("reboot", 0)])

    def test_cpu_time_increases(self) -> None:
        """cpu.time grows with running time and stays put while paused."""
        first = self.successResultOf(self.hypervisor.bulk_stats())[self.vm_id]["cpu.time"]
        self.clock.advance(5)
        second = self.successResultOf(self.hypervisor.bulk_stats())[self.vm_id]["cpu.time"]
        self.assertGreater(second, first)
        self.successResultOf(self.hypervisor.suspend(self.vm_id))
        paused = self.successResultOf(self.hypervisor.bulk_stats())[self.vm_id]["cpu.time"]
        self.clock.advance(5)
        later = self.successResultOf(self.hypervisor.bulk_stats())[self.vm_id]
        self.assertEqual(later["cpu.time"], paused)
        self.assertEqual(later["state.state"], DomainState.PAUSED.value)
        self.clock.advance(0)

    def test_set_memory_above_maximum(self) -> None:
        """A balloon target above the maximum memory is refused."""
        self.failureResultOf(self.hypervisor.set_memory(self.vm_id, 10**9), HypervisorError)

    def test_resume_running_refused(self) -> None:
        """Resuming a running domain is refused, as libvirt does."""
        self.failureResultOf(self.hypervisor.resume(self.vm_id), HypervisorError)
        self.clock.advance(0)


def test_synchronous_mode() -> None:
    """Without a reactor, events arrive before the call returns and shutdown is immediate."""
    hypervisor = MemoryHypervisor()
    events: list[DomainEvent] = []
    hypervisor.set_event_listener(events.append)
    vm_id = str(uuid.uuid4())
    hypervisor.create(bare_xml(vm_id=vm_id), True)
    assert [e.kind for e in events] == [LifecycleEvent.STARTED, LifecycleEvent.SUSPENDED]
    hypervisor.shutdown(vm_id)
    assert events[-1] == DomainEvent(vm_id, LifecycleEvent.STOPPED, StoppedDetail.SHUTDOWN)
    assert hypervisor.domains == {}


@pytest.mark.parametrize(
    "xml",
    [
        "<domain><name>x</name><uuid>not-a-uuid</uuid></domain>",
        "<domain><uuid>0b9c2a2e-9b53-4c8e-a2b0-3c2f8f3a2d11</uuid></domain>",
        "<!DOCTYPE d [<!ENTITY e 'x'>]><domain><name>&e;</name></domain>",
    ],
)
def test_bad_xml_refused(xml: str) -> None:
    """Invalid or hostile domain XML fails with HypervisorError."""
    hypervisor = MemoryHypervisor()
    failures: list[Any] = []
    hypervisor.create(xml, False).addErrback(failures.append)
    assert failures and failures[0].check(HypervisorError)
