"""The migrations of this host: outgoing and incoming jobs, their slots, and the verbs' logic.

:class:`MigrationJobs` is what ``vdsmlike/api/migration.py`` calls: it checks params (pure
:mod:`.migration`), runs the hooks that may veto, hands the VM's state to the container, and
starts an :class:`~.migration_source.OutgoingMigration` or an
:class:`~.migration_destination.IncomingMigration`. It follows every VM's state through the
container's listener, so that a VM destroyed while it waits for a slot stops its migration, and
an incoming VM that arrives or fails gives its slot back.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..api import errors
from ..interfaces import IAgentConnector, IHookRunner
from ..virt.errors import DomainNotFound, HypervisorError
from . import domxml
from .container import VmContainer
from .migration import (
    MigrationSettings,
    MigrationView,
    destination_xml,
    migration_status,
    parse_change_params,
    parse_migrate_params,
)
from .migration_destination import IncomingMigration
from .migration_slots import MigrationSlots
from .migration_source import MigrationFailed, OutgoingMigration, Publish, SlotWaiters
from .params import boolean
from .states import VmState
from .vm import Vm
from .xmlsafe import InvalidDomainXml, InvalidVmParams


class MigrationJobs:
    """
    This host's migrations, both ways.

    :param hypervisor: provides ``IHypervisor`` and ``ILiveMigration``.
    :param serial_dir: where incoming VMs get their serial console files.
    :param token: the token this agent's peers accept (sent when ``dstToken`` is absent).
    """

    log = Logger()

    def __init__(
        self,
        container: VmContainer,
        hypervisor: Any,
        hooks: IHookRunner,
        *,
        connector: IAgentConnector,
        clock: Any,
        publish: Publish,
        settings: MigrationSettings,
        serial_dir: str | None = None,
        token: str | None = None,
    ) -> None:
        self._container = container
        self._hv = hypervisor
        self._hooks = hooks
        self._connector = connector
        self._clock = clock
        self._publish = publish
        self._settings = settings
        self._serial_dir = serial_dir
        self._token = token
        slots = MigrationSlots(outgoing=settings.max_outgoing, incoming=settings.max_incoming)
        self.slots = slots
        self._outgoing_slots = SlotWaiters(slots.outgoing)
        self._outgoing: dict[str, OutgoingMigration] = {}
        self._incoming: dict[str, IncomingMigration] = {}
        container.add_state_listener(self._on_state)

    # -- source side

    async def migrate(self, vm_id: str, raw: dict[str, Any]) -> bool:
        """
        Start migrating a VM away; the work goes on in the background.

        :returns: True once the VM is ``Migration Source``.
        :raises errors.InvalidParameter: for bad params; ``errors.MigrationInProgress`` (51)
            for a VM migrating already; ``errors.HookError`` (1500) when
            ``before_vm_migrate_source`` vetoes (the VM stays as it was);
            ``errors.UnsupportedOperation`` (75) when this host cannot send VMs.
        """
        try:
            params = parse_migrate_params(raw, self._settings)
        except InvalidVmParams as e:
            raise errors.InvalidParameter(str(e)) from None
        vm = self._container.migratable(vm_id)
        if not self._hv.migration_support.outgoing:
            raise errors.UnsupportedOperation("this host cannot migrate VMs away")
        current = self._outgoing.get(vm.vm_id)
        if current is not None and current.active:
            raise errors.MigrationInProgress(vmId=vm.vm_id)
        self._outgoing.pop(vm.vm_id, None)
        self._prune()
        self._outgoing[vm.vm_id] = placeholder = _Reserved(vm)  # type: ignore[assignment]
        try:
            xml = await self._source_xml(vm)
            if vm.state not in _MIGRATABLE or vm.is_down:
                raise errors.UnexpectedError(f"the VM became {vm.state.value}", vmId=vm.vm_id)
        except BaseException:
            if self._outgoing.get(vm.vm_id) is placeholder:
                del self._outgoing[vm.vm_id]
            raise
        job = self._outgoing_job(vm, params, xml)
        self._outgoing[vm.vm_id] = job
        self._container.begin_outgoing(vm)
        Deferred.fromCoroutine(job.run())
        return True

    async def _source_xml(self, vm: Vm) -> str:
        try:
            xml = await self._hv.migratable_xml(vm.vm_id)
        except DomainNotFound:
            raise errors.NoSuchVM("the domain is gone", vmId=vm.vm_id) from None
        except HypervisorError as e:
            raise errors.MigrateError(str(e), vmId=vm.vm_id) from None
        result = await self._hooks.run(
            "before_vm_migrate_source", xml, vm_id=vm.vm_id, custom=dict(vm.metadata.custom)
        )
        return result.payload

    def _outgoing_job(self, vm: Vm, params: Any, xml: str) -> OutgoingMigration:
        return OutgoingMigration(
            vm,
            params,
            xml,
            hypervisor=self._hv,
            container=self._container,
            hooks=self._hooks,
            connector=self._connector,
            slots=self._outgoing_slots,
            clock=self._clock,
            publish=self._publish,
            settings=self._settings,
            emulated=self._hv.migration_support.emulated,
            token=self._token,
        )

    def cancel(self, vm_id: str) -> bool:
        """
        Cancel a VM's outgoing migration; it ends cancelled and the VM is Up here again.

        :raises errors.MigrationCancelError: (47) when the VM is not migrating away.
        """
        vm = self._container.get(vm_id)
        job = self._outgoing.get(vm.vm_id)
        if not isinstance(job, OutgoingMigration) or not job.active:
            raise errors.MigrationCancelError(vmId=vm.vm_id)
        job.cancel()
        return True

    def status(self, vm_id: str) -> dict[str, Any]:
        """``VM.getMigrationStatus``: the VM's current or last outgoing migration."""
        vm = self._container.get(vm_id)
        job = self._outgoing.get(vm.vm_id)
        view = job.view() if isinstance(job, OutgoingMigration) else MigrationView()
        return migration_status(view)

    async def change_params(self, vm_id: str, raw: dict[str, Any]) -> bool:
        """
        Change a running migration's bandwidth (``{"maxBandwidth": MiB/s}``).

        :raises errors.MigrationNotInProgress: (81) when the VM is not migrating away.
        """
        try:
            bandwidth = parse_change_params(raw)
        except InvalidVmParams as e:
            raise errors.InvalidParameter(str(e)) from None
        vm = self._container.get(vm_id)
        job = self._outgoing.get(vm.vm_id)
        if not isinstance(job, OutgoingMigration) or not job.active:
            raise errors.MigrationNotInProgress(vmId=vm.vm_id)
        try:
            await job.change_bandwidth(bandwidth)
        except MigrationFailed as e:
            raise errors.UnexpectedError(str(e), vmId=vm.vm_id) from None
        return True

    # -- destination side

    async def create_incoming(
        self, vm_id: str, params: dict[str, Any], incoming_limit: int = 0
    ) -> dict[str, Any]:
        """
        Prepare to receive a VM (``VM.migrationCreate``).

        :returns: ``{"params": {vmId, status, xml, libvirtUri, migrationAddress?, emulated},
            "migrationPort": 0}``: the XML the source's libvirt must send (``DEST_XML``) and
            where to send it.
        :raises errors.MigrationLimit: (82) when this host receives its limit already.
        """
        support = self._hv.migration_support
        if not support.incoming:
            raise errors.UnsupportedOperation(
                f"this host cannot receive migrations ({self._hv.uri} has no daemon to talk to)"
            )
        xml = self._incoming_xml(vm_id, params, support.emulated)
        if incoming_limit:
            self.slots.incoming.set_limit(incoming_limit)
        vm_id = vm_id.lower()
        if not self.slots.incoming.take(vm_id):
            raise errors.MigrationLimit(vmId=vm_id)
        try:
            vm = await self._receive(vm_id, xml)
        except BaseException:
            if vm_id not in self._incoming:
                self.slots.incoming.release(vm_id)
            raise
        answer = {
            "vmId": vm.vm_id,
            "status": vm.state.value,
            "xml": vm.xml,
            "libvirtUri": self._settings.libvirt_uri or self._hv.uri,
            "emulated": support.emulated,
        }
        if self._settings.address:
            answer["migrationAddress"] = self._settings.address
        return {"params": answer, "migrationPort": 0}

    def _incoming_xml(self, vm_id: str, params: dict[str, Any], emulated: bool) -> str:
        try:
            source_emulated = boolean(params.get("emulated", False), "params.emulated")
        except InvalidVmParams as e:
            raise errors.InvalidParameter(str(e)) from None
        if source_emulated != emulated:
            kinds = {True: "emulates migration (libvirt test driver)", False: "migrates for real"}
            raise errors.UnsupportedOperation(
                f"this host {kinds[emulated]}, the source {kinds[source_emulated]}"
            )
        xml = params.get("_srcDomXML")
        if not isinstance(xml, str) or not xml.strip():
            raise errors.MissingParameter("params._srcDomXML (the source's domain XML)")
        try:
            xml = destination_xml(xml, self._serial_dir, vm_id.lower())
            spec = domxml.parse_domain(xml)
        except InvalidDomainXml as e:
            raise errors.CreateError(f"invalid domain XML: {e}") from None
        if spec.vm_id != vm_id.lower():
            raise errors.InvalidParameter(f"vmID {vm_id} does not match the XML's {spec.vm_id}")
        return xml

    async def _receive(self, vm_id: str, xml: str) -> Vm:
        if vm_id in {vm.vm_id for vm in self._container.vms()}:
            raise errors.VMExists(vmId=vm_id)
        custom = dict(domxml.parse_domain(xml).metadata.custom)
        result = await self._hooks.run(
            "before_vm_migrate_destination", xml, vm_id=vm_id, custom=custom
        )
        vm = self._container.add_incoming(result.payload)
        self._incoming[vm_id] = IncomingMigration(
            vm,
            hypervisor=self._hv,
            container=self._container,
            hooks=self._hooks,
            clock=self._clock,
            timeout=self._settings.destination_timeout,
            on_end=self._incoming_ended,
        )
        try:
            await self._hv.prepare_incoming(vm.xml)
        except HypervisorError as e:
            self._container.incoming_failed(vm, str(e))
            raise errors.MigrateError(str(e), vmId=vm_id) from None
        return vm

    async def finish_incoming(self, vm_id: str) -> bool:
        """
        ``VM.migrationFinish``: the source's half is done; the VM must run here now.

        :raises errors.MigrationNotInProgress: (81) for a VM that is not arriving.
        :raises errors.MigrateError: (12) if it never arrived (it is Down then).
        """
        vm = self._container.get(vm_id)
        job = self._incoming.get(vm.vm_id)
        if job is None:
            if vm.state in (VmState.UP, VmState.PAUSED):
                return True  # libvirt's RESUMED/MIGRATED came first
            raise errors.MigrationNotInProgress(vmId=vm.vm_id)
        await job.finish()
        return True

    def _incoming_ended(self, job: IncomingMigration) -> None:
        if self._incoming.get(job.vm_id) is job:
            del self._incoming[job.vm_id]
        self.slots.incoming.release(job.vm_id)

    # -- bookkeeping

    def _on_state(self, vm: Vm, old: VmState, new: VmState) -> None:
        incoming = self._incoming.get(vm.vm_id)
        if incoming is not None and incoming.vm is vm:
            incoming.on_state(old, new)
        outgoing = self._outgoing.get(vm.vm_id)
        if (
            new == VmState.DOWN
            and isinstance(outgoing, OutgoingMigration)
            and outgoing.vm is vm
            and outgoing.state in ("waiting", "preparing")
        ):
            # Destroyed (or died) before libvirt's part began: nothing left to move. Once it
            # began, libvirt's own outcome decides (a Down then is usually STOPPED/MIGRATED).
            outgoing.cancel()

    def _prune(self) -> None:
        """Forget finished migrations of VMs that are gone."""
        here = {vm.vm_id for vm in self._container.vms()}
        for vm_id in [k for k, job in self._outgoing.items() if k not in here and not job.active]:
            del self._outgoing[vm_id]

    @property
    def outgoing(self) -> list[str]:
        """VM ids with an outgoing migration running."""
        return [k for k, job in self._outgoing.items() if job.active]

    @property
    def incoming(self) -> list[str]:
        """VM ids arriving."""
        return list(self._incoming)


_MIGRATABLE = (
    VmState.POWERING_UP,
    VmState.UP,
    VmState.POWERING_DOWN,
    VmState.REBOOT_IN_PROGRESS,
    VmState.PAUSED,
)


class _Reserved:
    """Holds a VM's place while ``VM.migrate`` runs its hook, so a second call is refused."""

    active = True

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
