"""The container's side of live migration: VMs leaving this host and VMs arriving.

The migration jobs (:mod:`.migration_source`, :mod:`.migration_destination`) drive the
hypervisor; they tell the container what happened, and it moves the VM through the state
machine: an outgoing VM goes ``Migration Source`` and then Down (exit reason 4) or back to
Up (or Paused, for a VM that was paused); an incoming VM is registered in ``Migration
Destination`` and then runs here or goes Down (exit reason 8). libvirt's own events
(STOPPED/MIGRATED, RESUMED/MIGRATED) may say so first; each step is then a no-op.
"""

from __future__ import annotations

from ..api import errors
from . import domxml
from .container_base import ContainerBase
from .lifecycle import Exit, Requests
from .states import ExitReason, VmEvent, VmState
from .vm import Vm


class ContainerMigration(ContainerBase):
    """Outgoing and incoming VMs (a part of :class:`~.container.VmContainer`)."""

    def migratable(self, vm_id: str) -> Vm:
        """
        :returns: the VM, if it may start an outgoing migration (running or paused).
        :raises errors.NoSuchVM: for an unknown VM; ``errors.VMIsDown`` for a Down one;
            ``errors.MigrationInProgress`` (51) for one migrating; ``errors.UnexpectedError``
            in any other state; ``errors.UnsupportedOperation`` for an external VM.
        """
        return self._running(vm_id, allow=(VmState.PAUSED,))

    def begin_outgoing(self, vm: Vm) -> None:
        """The VM starts migrating away: ``Migration Source``."""
        if vm.state == VmState.PAUSED:
            self._paused_before_migration.add(vm.vm_id)
        self._transition(vm, VmEvent.MIGRATION_STARTED)

    def end_outgoing(self, vm: Vm, *, succeeded: bool) -> None:
        """
        The outgoing migration ended: Down with exit reason 4 if it succeeded, else back to Up
        (or Paused, for a VM that was paused). Nothing happens to a VM already Down (libvirt's
        STOPPED/MIGRATED may have come first, or the VM was destroyed meanwhile).
        """
        paused = vm.vm_id in self._paused_before_migration
        self._paused_before_migration.discard(vm.vm_id)
        if vm.is_down or self._vms.get(vm.vm_id) is not vm:
            return
        if succeeded:
            self._transition(vm, VmEvent.STOPPED, exit=Exit.of(ExitReason.MIGRATION_SUCCEEDED))
        elif self._transition(vm, VmEvent.MIGRATION_FAILED) and paused:
            self._transition(vm, VmEvent.PAUSED, pause_code="NOERR")

    def add_incoming(self, xml: str) -> Vm:
        """
        Register a VM about to arrive by migration, in ``Migration Destination``.

        Its start time (for ``elapsedTime``) comes from the metadata the source kept in the XML.

        :raises errors.CreateError: for unusable domain XML.
        :raises errors.VMExists: for a VM id already in the container.
        """
        try:
            spec = domxml.parse_domain(xml)
        except domxml.InvalidDomainXml as e:
            raise errors.CreateError(f"invalid domain XML: {e}") from None
        if spec.vm_id in self._vms:
            raise errors.VMExists(vmId=spec.vm_id)
        vm = Vm(
            spec,
            xml,
            VmState.MIGRATION_DESTINATION,
            self._event_time(),
            spec.metadata,
            requests=Requests(incoming=True),
        )
        if spec.metadata.start_time is not None:
            vm.started_monotonic = self._started_monotonic(spec.metadata.start_time)
        self._vms[vm.vm_id] = vm
        self.log.info("vm {vm_id} ({name}) is arriving", vm_id=vm.vm_id, name=vm.name)
        self._emit(vm)
        return vm

    def incoming_arrived(self, vm: Vm, *, paused: bool = False) -> bool:
        """
        The incoming VM runs here now: Up (or Paused, for a paused guest), unless libvirt's
        RESUMED/MIGRATED already said so.

        :returns: whether this call moved the VM.
        """
        if self._vms.get(vm.vm_id) is not vm:
            return False
        moved = self._transition(vm, VmEvent.MIGRATION_ARRIVED)
        if paused:
            moved = self._transition(vm, VmEvent.PAUSED, pause_code="NOERR") or moved
        return moved

    def incoming_failed(self, vm: Vm, message: str) -> None:
        """The incoming VM will not arrive: Down with exit reason 8 (migration failed)."""
        if self._vms.get(vm.vm_id) is vm:
            exit = Exit.of(ExitReason.MIGRATION_FAILED, message)
            self._transition(vm, VmEvent.STOPPED, exit=exit)

    async def refresh(self, vm: Vm) -> None:
        """Read the VM's live XML again (after it arrived); failures are only logged."""
        try:
            await self._refresh_xml(vm)
        except errors.RpcError as e:
            self.log.warn("vm {vm_id}: cannot read its XML: {error}", vm_id=vm.vm_id, error=e)
