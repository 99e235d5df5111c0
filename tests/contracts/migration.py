"""The ILiveMigration contract, as emulating adapters show it (the test driver, the in-memory
twin); real QEMU migration is exercised through two agents in ``test_migration_qemu.py``.

A class using :class:`LiveMigrationContract` provides an async fixture ``hypervisor`` yielding
an opened adapter (which also provides IHypervisor) and destroying what the test created, and
:meth:`new_xml`. Tests run on the real reactor (pytest-twisted).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from contracts.hypervisor import failure_of, sleep, wait_until
from zope.interface.verify import verifyObject

from vdsmlike.interfaces import ILiveMigration
from vdsmlike.virt.errors import DomainNotFound, HypervisorError
from vdsmlike.virt.events import DomainEvent, DomainState, LifecycleEvent, StoppedDetail
from vdsmlike.vm.migration import JobStats, MigrationRequest, MigrationSupport

MIGRATED = 1  # libvirt's STARTED_MIGRATED and RESUMED_MIGRATED details


def request(bandwidth: int = 0) -> MigrationRequest:
    """A request to another (imaginary) host."""
    return MigrationRequest(dest_uri="test:///elsewhere", bandwidth=bandwidth)


class LiveMigrationContract:
    """Behaviour every emulating ILiveMigration shows."""

    events: list[DomainEvent]

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        """Domain XML for a new domain of 128 MiB (override)."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def record_events(self, hypervisor: Any) -> None:
        """Send ``hypervisor``'s events to ``self.events``."""
        self.events = []
        hypervisor.set_event_listener(self.events.append)

    def events_of(self, vm_id: str) -> list[tuple[Any, int]]:
        return [(e.kind, e.detail) for e in self.events if e.vm_id == vm_id]

    async def start(self, hypervisor: Any) -> str:
        return (await hypervisor.create(self.new_xml(), False)).vm_id

    async def listed(self, hypervisor: Any) -> dict[str, DomainState]:
        return {d.vm_id: d.state for d in await hypervisor.list_domains()}

    def test_provides_interface(self, hypervisor: Any) -> None:
        """The adapter provides ILiveMigration and says it emulates."""
        assert verifyObject(ILiveMigration, hypervisor)
        assert hypervisor.migration_support == MigrationSupport(True, True, emulated=True)

    @pytest_twisted.ensureDeferred
    async def test_migrate_moves_the_domain_away(self, hypervisor: Any) -> None:
        """A migration ends with the domain gone here and STOPPED/MIGRATED reported."""
        vm_id = await self.start(hypervisor)
        await hypervisor.migrate(vm_id, request())
        assert vm_id not in await self.listed(hypervisor)
        stopped = (LifecycleEvent.STOPPED, int(StoppedDetail.MIGRATED))
        await wait_until(lambda: stopped in self.events_of(vm_id))
        assert (LifecycleEvent.STOPPED, int(StoppedDetail.DESTROYED)) not in self.events_of(vm_id)

    @pytest_twisted.ensureDeferred
    async def test_a_running_job_reports_stats_and_can_be_aborted(self, hypervisor: Any) -> None:
        """While it runs a job has statistics; aborted, it fails and the domain stays running."""
        vm_id = await self.start(hypervisor)
        assert await hypervisor.job_stats(vm_id) is None
        migrating = hypervisor.migrate(vm_id, request(bandwidth=1))
        await sleep(0.2)
        stats = await hypervisor.job_stats(vm_id)
        assert isinstance(stats, JobStats)
        assert stats.data_total == 128 * 1024 * 1024 and 0 < stats.data_processed
        assert stats.iteration == 1 and stats.elapsed_ms > 0
        await hypervisor.abort_job(vm_id)
        error = await failure_of(migrating, HypervisorError)
        assert "canceled" in str(error)
        assert (await self.listed(hypervisor))[vm_id] == DomainState.RUNNING
        assert await hypervisor.job_stats(vm_id) is None

    @pytest_twisted.ensureDeferred
    async def test_abort_without_a_job_fails(self, hypervisor: Any) -> None:
        """Aborting when nothing migrates fails with HypervisorError (not DomainNotFound)."""
        vm_id = await self.start(hypervisor)
        error = await failure_of(hypervisor.abort_job(vm_id), HypervisorError)
        assert not isinstance(error, DomainNotFound)

    @pytest_twisted.ensureDeferred
    async def test_speed_and_downtime(self, hypervisor: Any) -> None:
        """Downtime and speed set before the migration apply to it; set during, at once."""
        vm_id = await self.start(hypervisor)
        await hypervisor.set_migration_downtime(vm_id, 150)
        await hypervisor.set_migration_speed(vm_id, 1)
        migrating = hypervisor.migrate(vm_id, request(bandwidth=0))
        await sleep(0.15)
        stats = await hypervisor.job_stats(vm_id)
        assert stats is not None and stats.downtime == 150
        await hypervisor.set_migration_downtime(vm_id, 400)
        assert (await hypervisor.job_stats(vm_id)).downtime == 400
        await hypervisor.set_migration_speed(vm_id, 0)
        await migrating
        assert vm_id not in await self.listed(hypervisor)

    @pytest_twisted.ensureDeferred
    async def test_destroy_during_a_migration_fails_it(self, hypervisor: Any) -> None:
        """A domain destroyed while it migrates makes the migration fail."""
        vm_id = await self.start(hypervisor)
        migrating = hypervisor.migrate(vm_id, request(bandwidth=1))
        await sleep(0.1)
        await hypervisor.destroy(vm_id, False)
        await failure_of(migrating, HypervisorError)

    @pytest_twisted.ensureDeferred
    async def test_an_incoming_domain_waits_paused_then_resumes(self, hypervisor: Any) -> None:
        """prepare_incoming defines the domain paused (STARTED/MIGRATED, no pause event);
        finish_incoming resumes it (RESUMED/MIGRATED)."""
        vm_id = str(uuid.uuid4())
        await hypervisor.prepare_incoming(self.new_xml(vm_id=vm_id))
        assert (await self.listed(hypervisor))[vm_id] == DomainState.PAUSED
        info = await hypervisor.finish_incoming(vm_id)
        assert info.state == DomainState.RUNNING
        resumed = (LifecycleEvent.RESUMED, MIGRATED)
        await wait_until(lambda: resumed in self.events_of(vm_id))
        kinds = self.events_of(vm_id)
        assert kinds[0] == (LifecycleEvent.STARTED, MIGRATED), kinds
        assert all(kind != LifecycleEvent.SUSPENDED for kind, _ in kinds), kinds

    @pytest_twisted.ensureDeferred
    async def test_incoming_refusals(self, hypervisor: Any) -> None:
        """An incoming domain that exists or is broken is refused; one never prepared is not
        found."""
        vm_id = await self.start(hypervisor)
        await failure_of(hypervisor.prepare_incoming(self.new_xml(vm_id=vm_id)), HypervisorError)
        await failure_of(hypervisor.prepare_incoming("<domain"), HypervisorError)
        await failure_of(hypervisor.finish_incoming(str(uuid.uuid4())), DomainNotFound)

    @pytest_twisted.ensureDeferred
    async def test_unknown_domain(self, hypervisor: Any) -> None:
        """Every per-domain migration call on an unknown id fails with DomainNotFound."""
        vm_id = str(uuid.uuid4())
        for d in (
            hypervisor.migratable_xml(vm_id),
            hypervisor.migrate(vm_id, request()),
            hypervisor.job_stats(vm_id),
            hypervisor.abort_job(vm_id),
            hypervisor.set_migration_speed(vm_id, 5),
            hypervisor.set_migration_downtime(vm_id, 5),
        ):
            await failure_of(d, DomainNotFound)

    @pytest_twisted.ensureDeferred
    async def test_migratable_xml_describes_the_domain(self, hypervisor: Any) -> None:
        """The migratable XML names the domain by its UUID."""
        vm_id = await self.start(hypervisor)
        assert vm_id in await hypervisor.migratable_xml(vm_id)
