"""One VM's incoming live migration: the destination agent's side.

``VM.migrationCreate`` (called by the source agent) registers the VM in ``Migration
Destination`` after ``before_vm_migrate_destination`` (which may veto, 1500) and asks the
hypervisor to get ready (:meth:`~vdsmlike.interfaces.ILiveMigration.prepare_incoming`). From
then on :class:`IncomingMigration` watches the VM:

- libvirt's RESUMED/MIGRATED (real migrations), or the source's ``VM.migrationFinish`` (which
  makes an emulating hypervisor resume the domain), moves it to Up; ``after_vm_migrate_destination``
  then runs with the live XML;
- the source's ``VM.destroy`` after a failure, the domain dying, or ``destination_timeout``
  seconds without an arrival end it Down with exit reason 8 (migration failed).

Either way the incoming slot is given back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..api import errors
from ..interfaces import IHookRunner, IHypervisor, ILiveMigration
from ..virt.errors import DomainNotFound, HypervisorError
from ..virt.events import DomainState
from .container import VmContainer
from .states import VmState
from .vm import Vm


class IncomingMigration:
    """
    Watches one incoming VM until it arrives or fails.

    :param on_end: called once, with this object, when the migration is over either way.
    """

    log = Logger()

    def __init__(
        self,
        vm: Vm,
        *,
        hypervisor: Any,
        container: VmContainer,
        hooks: IHookRunner,
        clock: Any,
        timeout: float,
        on_end: Callable[[IncomingMigration], None],
    ) -> None:
        self.vm = vm
        self._hv: IHypervisor | ILiveMigration = hypervisor
        self._container = container
        self._hooks = hooks
        self._clock = clock
        self._on_end = on_end
        self.ended = False
        self._timer = clock.callLater(timeout, self._timed_out)

    @property
    def vm_id(self) -> str:
        """The incoming VM's id."""
        return self.vm.vm_id

    def on_state(self, old: VmState, new: VmState) -> None:
        """Follow the VM's state changes (the container's listener calls this)."""
        if self.ended or old != VmState.MIGRATION_DESTINATION:
            return
        if new == VmState.DOWN:
            self._end()
        elif new in (VmState.UP, VmState.PAUSED):
            self.log.info("vm {vm_id} arrived", vm_id=self.vm_id)
            self._end()
            Deferred.fromCoroutine(self._arrived()).addErrback(
                lambda f: self.log.failure("vm {vm_id} after arrival", f, vm_id=self.vm_id)
            )

    async def finish(self) -> None:
        """
        The source says its half is done: make sure the VM runs here (an emulating hypervisor
        resumes it now; real libvirt has already).

        :raises errors.MigrateError: if the domain is not here; the VM is then Down (8).
        """
        if self.ended:
            return
        try:
            info = await self._hv.finish_incoming(self.vm_id)  # type: ignore[union-attr]
        except HypervisorError as e:
            reason = "the domain never arrived" if isinstance(e, DomainNotFound) else str(e)
            self._container.incoming_failed(self.vm, reason)
            raise errors.MigrateError(reason, vmId=self.vm_id) from None
        self._container.incoming_arrived(self.vm, paused=info.state == DomainState.PAUSED)

    async def _arrived(self) -> None:
        await self._container.refresh(self.vm)
        await self._hooks.run(
            "after_vm_migrate_destination",
            self.vm.xml,
            vm_id=self.vm_id,
            custom=dict(self.vm.metadata.custom),
        )

    def _timed_out(self) -> None:
        self._timer = None
        if self.ended:
            return
        self.log.warn("vm {vm_id} did not arrive in time", vm_id=self.vm_id)
        d = self._hv.destroy(self.vm_id, False)  # type: ignore[union-attr]
        d.addErrback(lambda f: f.trap(DomainNotFound))
        d.addErrback(
            lambda f: self.log.warn(
                "vm {vm_id}: cleanup: {e}", vm_id=self.vm_id, e=f.getErrorMessage()
            )
        )
        d.addCallback(
            lambda _: self._container.incoming_failed(self.vm, "the incoming migration timed out")
        )

    def _end(self) -> None:
        self.ended = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._on_end(self)
