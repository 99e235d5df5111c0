"""The VMs of this host: their lifecycle, recovery after a restart, and their status events.

The imperative shell around the pure pieces: it asks the hypervisor to act, feeds what comes
back (results and libvirt events) through the state machine (:mod:`.states`) and the event
interpretation (:mod:`.lifecycle`), and publishes ``|virt|VM_status|<vmId>`` whenever a VM's
state changes. Everything runs in the reactor thread; the hypervisor does its blocking work on
its own runner, serialized per VM, so two verbs on one VM reach libvirt in the order they came.

:class:`VmContainer` is put together from parts: the VM table with the transitions, checks
and calls every operation shares (:mod:`.container_base`), recovery after a restart
(:mod:`.container_recovery`), the VMs leaving and arriving by migration
(:mod:`.container_migration`), and here the verbs: create, destroy, shutdown, reset, pause,
cont, the balloon, hotplug, and libvirt's events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from ..api import errors
from ..virt.errors import DomainNotFound, HypervisorError
from ..virt.events import DomainEvent
from . import domxml
from .container_base import ContainerConfig, status_event_id
from .container_migration import ContainerMigration
from .container_recovery import ContainerRecovery
from .lifecycle import Exit, interpret
from .params import boolean
from .states import ExitReason, VmEvent, VmState
from .vm import Vm, vm_definition

# Kept importable from here, where the service and the tests find them.
__all__ = ["ContainerConfig", "VmContainer", "status_event_id"]

# libvirt's VIR_DOMAIN_START_PAUSED, the launch flag a before_vm_start hook may ask for.
START_PAUSED = 1


class VmContainer(ContainerRecovery, ContainerMigration):
    """The VMs of this host, keyed by VM id. Down VMs stay until ``VM.destroy``."""

    # -- create ------------------------------------------------------------------------------

    async def create(self, vm_id: str | None, vm_params: dict[str, Any]) -> dict[str, Any]:
        """
        Register a VM in WaitForLaunch and start it in the background, as VDSM does.

        :returns: the VM definition with status ``WaitForLaunch``; progress comes as events.
        :raises errors.VMExists: for a VM id already in the container.
        :raises errors.CreateError: for unusable domain XML.
        :raises errors.InvalidParameter: for unusable legacy params.
        """
        spec, xml = self._prepare(vm_id, vm_params)
        if spec.vm_id in self._vms:
            raise errors.VMExists(vmId=spec.vm_id)
        metadata = replace(spec.metadata, start_time=self._now())
        if self._launch_paused(vm_params):
            metadata = replace(metadata, launch_paused=True)
        xml = domxml.with_metadata(xml, metadata)
        vm = Vm(spec, xml, VmState.WAIT_FOR_LAUNCH, self._event_time(), metadata)
        self._vms[vm.vm_id] = vm
        self._emit(vm)
        Deferred.fromCoroutine(self._start(vm)).addErrback(
            lambda f: self.log.failure("starting vm {vm_id}", f, vm_id=vm.vm_id)
        )
        return vm_definition(vm)

    def _prepare(self, vm_id: str | None, params: dict[str, Any]) -> tuple[domxml.DomainSpec, str]:
        if "xml" in params:
            xml = params["xml"]
        else:
            params = dict(params)
            params.setdefault("vmId", vm_id)
            xml = self._build_legacy(params)
        try:
            if self._config.domain_type:
                xml = domxml.set_domain_type(xml, self._config.domain_type)
            spec = domxml.parse_domain(xml)
        except domxml.InvalidDomainXml as e:
            raise errors.CreateError(f"invalid domain XML: {e}") from None
        if vm_id and vm_id.lower() != spec.vm_id:
            raise errors.InvalidParameter(
                f"vmID {vm_id} does not match the domain's uuid {spec.vm_id}"
            )
        return spec, xml

    @staticmethod
    def _launch_paused(params: dict[str, Any]) -> bool:
        try:
            return boolean(params.get("launchPaused", False), "launchPaused")
        except domxml.InvalidVmParams as e:
            raise errors.InvalidParameter(str(e)) from None

    def _build_legacy(self, params: dict[str, Any]) -> str:
        serial = None
        if self._config.serial_dir and params.get("vmId"):
            serial = f"{self._config.serial_dir}/{str(params['vmId']).lower()}.log"
        try:
            return domxml.build_domain(
                params, domain_type=self._config.domain_type or "qemu", serial_path=serial
            )
        except domxml.InvalidVmParams as e:
            raise errors.InvalidParameter(str(e)) from None

    async def _start(self, vm: Vm) -> None:
        try:
            xml, device_flags = await self._create_devices(vm)
            xml, flags = await self._hook("before_vm_start", xml, vm)
        except errors.HookError as e:
            self.log.error("vm {vm_id}: before_vm_start refused: {error}", vm_id=vm.vm_id, error=e)
            self._transition(
                vm, VmEvent.STOPPED, exit=Exit.of(ExitReason.GENERIC_ERROR, e.wire_message())
            )
            return
        if vm.requests.destroy:
            return  # VM.destroy came while the hooks ran; it already reported the VM Down.
        paused = vm.metadata.launch_paused or bool(((flags or 0) | device_flags) & START_PAUSED)
        try:
            info = await self._hv.create(xml, paused)
        except HypervisorError as e:
            self.log.error("vm {vm_id} failed to start: {error}", vm_id=vm.vm_id, error=e)
            self._transition(
                vm, VmEvent.STOPPED, exit=Exit.of(ExitReason.LIBVIRT_START_FAILED, str(e))
            )
            return
        self._set_xml(vm, info.xml)
        vm.started_monotonic = self._monotonic()
        if vm.requests.destroy:
            return  # VM.destroy came while starting; it finishes the job.
        self._transition(vm, VmEvent.LAUNCHED_PAUSED if paused else VmEvent.LAUNCHED)
        await self._device_hooks("after_device_create", self._custom_devices(vm), vm)
        await self._hook("after_vm_start", vm.xml, vm)

    async def _create_devices(self, vm: Vm) -> tuple[str, int]:
        """
        Run ``before_device_create`` over each device that has custom properties, as VDSM does
        while it builds the domain XML, and put the devices as the hooks left them into the XML.

        :returns: the domain XML and the launch flags the hooks asked for.
        :raises errors.HookError: when a hook fails (the VM is not started).
        """
        replaced, flags = {}, 0
        for device in self._custom_devices(vm):
            replaced[device.key], asked = await self._hook(
                "before_device_create", device.xml, vm, params=device.custom
            )
            flags |= asked or 0
        try:
            return domxml.replace_devices(vm.xml, replaced), flags
        except domxml.InvalidDomainXml as e:
            raise errors.HookError(f"before_device_create left unusable XML: {e}") from None

    def _custom_devices(self, vm: Vm) -> list[domxml.CustomDevice]:
        try:
            return domxml.custom_devices(vm.xml, vm.metadata.device_custom)
        except domxml.InvalidDomainXml as e:
            self.log.warn("vm {vm_id}: devices unreadable: {error}", vm_id=vm.vm_id, error=e)
            return []

    async def _device_hooks(self, point: str, devices: list[domxml.CustomDevice], vm: Vm) -> None:
        """Run a point once per device, logging failures: used where nothing may stop."""
        for device in devices:
            try:
                await self._hook(point, device.xml, vm, params=device.custom)
            except errors.HookError as e:
                self.log.warn(
                    "vm {vm_id}: {point} failed for {key}, going on: {error}",
                    vm_id=vm.vm_id,
                    point=point,
                    key=device.key,
                    error=e,
                )

    # -- destroy, shutdown, reset --------------------------------------------------------------

    async def destroy(self, vm_id: str, graceful_attempts: int = 1) -> bool:
        """
        Stop the VM if it runs, report it Down once, and remove it from the container.

        A domain that is already gone counts as destroyed.

        :raises errors.NoSuchVM: for an unknown VM.
        :raises errors.DestroyError: if the hypervisor cannot stop it (the VM stays listed).
        """
        vm = self.get(vm_id)
        self._refuse_external(vm)
        devices = self._custom_devices(vm)
        if not vm.is_down:
            reason = {
                VmState.WAIT_FOR_LAUNCH: ExitReason.DESTROYED_ON_STARTUP,
                # An incoming VM destroyed before it arrived: its migration failed.
                VmState.MIGRATION_DESTINATION: ExitReason.MIGRATION_FAILED,
            }.get(vm.state, ExitReason.ADMIN_SHUTDOWN)
            vm.requests = replace(vm.requests, destroy=True)
            await self._hook("before_vm_destroy", None, vm)  # never stops a destroy
            await self._device_hooks("before_device_destroy", devices, vm)
            await self._stop_domain(vm, graceful=graceful_attempts > 0)
            self._transition(vm, VmEvent.STOPPED, exit=Exit.of(reason))
        self._vms.pop(vm.vm_id, None)
        self._cancel_timers(vm.vm_id)
        await self._device_hooks("after_device_destroy", devices, vm)
        await self._hook("after_vm_destroy", vm.xml, vm)
        return True

    async def _stop_domain(self, vm: Vm, *, graceful: bool) -> None:
        try:
            await self._hv.destroy(vm.vm_id, graceful)
            return
        except DomainNotFound:
            return
        except HypervisorError as e:
            if not graceful:
                vm.requests = replace(vm.requests, destroy=False)
                raise errors.DestroyError(str(e)) from None
            self.log.warn("graceful destroy of {vm_id} failed: {error}", vm_id=vm.vm_id, error=e)
        await self._stop_domain(vm, graceful=False)

    async def shutdown(
        self, vm_id: str, *, timeout: float, reboot: bool = False, force: bool = False
    ) -> bool:
        """
        Ask the guest to power off (or reboot); after ``timeout`` seconds without it, destroy the
        VM if ``force``, else give up and report it Up again.

        :raises errors.VMIsDown: for a Down VM; ``errors.UnexpectedError`` when not running.
        """
        vm = self._running(vm_id)
        if reboot:
            await self._call(vm, self._hv.reboot)
            self._transition(vm, VmEvent.REBOOT_REQUESTED)
            return True
        vm.requests = replace(vm.requests, shutdown=True)
        try:
            await self._call(vm, self._hv.shutdown)
        except errors.RpcError:
            vm.requests = replace(vm.requests, shutdown=False)
            raise
        self._transition(vm, VmEvent.SHUTDOWN_REQUESTED)
        self._schedule(vm, "shutdown", timeout, self._shutdown_timed_out, vm, force)
        return True

    def _shutdown_timed_out(self, vm: Vm, force: bool) -> None:
        if vm.is_down or self._vms.get(vm.vm_id) is not vm:
            return
        if force:
            self.log.warn("vm {vm_id} ignored shutdown; destroying it", vm_id=vm.vm_id)
            vm.requests = replace(vm.requests, destroy=True)
            d = Deferred.fromCoroutine(self._stop_domain(vm, graceful=False))
            d.addCallback(
                lambda _: self._transition(
                    vm, VmEvent.STOPPED, exit=Exit.of(ExitReason.ADMIN_SHUTDOWN)
                )
            )
            d.addErrback(
                lambda f: self.log.failure("forced shutdown of {vm_id}", f, vm_id=vm.vm_id)
            )
            return
        self.log.info("vm {vm_id} did not power off in time", vm_id=vm.vm_id)
        vm.requests = replace(vm.requests, shutdown=False)
        self._transition(vm, VmEvent.SHUTDOWN_GAVE_UP)

    async def reset(self, vm_id: str) -> bool:
        """Reset the virtual hardware: RebootInProgress, then Up."""
        vm = self._running(vm_id)
        await self._call(vm, self._hv.reset, error=errors.ResetError)
        self._transition(vm, VmEvent.REBOOT_REQUESTED)
        self._transition(vm, VmEvent.REBOOTED)
        return True

    # -- pause, cont, balloon ----------------------------------------------------------------

    async def pause(self, vm_id: str) -> bool:
        """Stop the guest's vCPUs. :raises errors.VMIsDown: for a Down VM."""
        vm = self._running(vm_id, allow=(VmState.PAUSED,))
        if vm.state != VmState.PAUSED:
            await self._hook("before_vm_pause", vm.xml, vm)
            await self._call(vm, self._hv.suspend)
            self._transition(vm, VmEvent.PAUSED, pause_code="NOERR")
            await self._hook("after_vm_pause", vm.xml, vm)
        await self._save_metadata(vm, replace(vm.metadata, pause_time=self._now()))
        return True

    async def cont(self, vm_id: str) -> bool:
        """Resume a paused VM. :raises errors.UnexpectedError: if it is not paused."""
        vm = self._usable(vm_id)
        if vm.state != VmState.PAUSED:
            raise errors.UnexpectedError(f"VM is not paused (status {vm.state.value})")
        await self._hook("before_vm_cont", vm.xml, vm)
        await self._call(vm, self._hv.resume)
        self._transition(vm, VmEvent.RESUMED)
        await self._hook("after_vm_cont", vm.xml, vm)
        await self._save_metadata(vm, replace(vm.metadata, pause_time=None))
        return True

    async def set_balloon_target(self, vm_id: str, target_kib: int) -> bool:
        """
        Set the balloon target in KiB and remember it across agent restarts.

        :raises errors.BalloonError: if the VM has no balloon device or ballooning is disabled.
        """
        vm = self._running(vm_id, allow=(VmState.PAUSED,))
        if not vm.spec.has_balloon or not vm.metadata.ballooning_enabled:
            raise errors.BalloonError("the VM has no balloon device", vmId=vm.vm_id)
        if target_kib > vm.spec.memory_kib:
            raise errors.BalloonError(
                f"target {target_kib} KiB exceeds the VM's memory {vm.spec.memory_kib} KiB"
            )
        await self._call(vm, self._hv.set_memory, target_kib, error=errors.BalloonError)
        await self._save_metadata(vm, replace(vm.metadata, balloon_target=target_kib))
        return True

    # -- hotplug -----------------------------------------------------------------------------

    async def hotplug(self, vm_id: str, params: dict[str, Any], kind: str) -> dict[str, Any]:
        """
        Hot-plug a disk or NIC described by VDSM's params.

        :param kind: ``"disk"`` or ``"nic"``.
        :returns: ``{"vmList": <VM definition>}``.
        """
        error = errors.HotplugDiskError if kind == "disk" else errors.HotplugNicError
        vm = self._running(vm_id, allow=(VmState.PAUSED,))
        device = self._device(params, kind, error)
        if device.custom and not device.key:
            raise error(f"a {kind} with custom properties needs a target dev or MAC to key them")
        await self._device_operation(
            vm, "hotplug", kind, device.xml, device.custom, self._hv.attach_device, error
        )
        if device.custom:
            custom = {**vm.metadata.device_custom, device.key: device.custom}
            await self._save_metadata(vm, replace(vm.metadata, device_custom=custom))
        return {"vmList": vm_definition(vm)}

    async def hotunplug(self, vm_id: str, params: dict[str, Any], kind: str) -> dict[str, Any]:
        """Hot-unplug a disk or NIC, found by its target dev or MAC address."""
        error = errors.HotunplugDiskError if kind == "disk" else errors.HotunplugNicError
        vm = self._running(vm_id, allow=(VmState.PAUSED,))
        wanted = self._device(params, kind, error)
        await self._refresh_xml(vm)
        device = domxml.find_device(vm.xml, kind, wanted.key) if wanted.key else None
        if device is None:
            raise error(f"no such {kind} in the VM", vmId=vm.vm_id)
        owned = vm.metadata.device_custom
        key = next((k for k in domxml.device_identities(device) if k in owned), None)
        await self._device_operation(
            vm, "hotunplug", kind, device, owned.get(key, {}), self._hv.detach_device, error
        )
        if key is not None:
            left = {k: v for k, v in owned.items() if k != key}
            await self._save_metadata(vm, replace(vm.metadata, device_custom=left))
        return {"vmList": vm_definition(vm)}

    async def _device_operation(
        self,
        vm: Vm,
        action: str,
        kind: str,
        device: str,
        custom: dict[str, str],
        method: Callable,
        error: type[errors.RpcError],
    ) -> None:
        """Attach or detach a device between its ``before_``/``after_<kind>_<action>`` hooks
        (and ``after_nic_<action>_fail`` when a NIC operation fails, as VDSM has it); the hooks
        see the device's custom properties."""
        device, _ = await self._hook(f"before_{kind}_{action}", device, vm, params=custom)
        try:
            await self._call(vm, method, device, error=error)
        except errors.RpcError:
            if kind == "nic":
                await self._hook(f"after_nic_{action}_fail", device, vm, params=custom)
            raise
        await self._refresh_xml(vm)
        await self._hook(f"after_{kind}_{action}", device, vm, params=custom)

    @staticmethod
    def _device(
        params: dict[str, Any], kind: str, error: type[errors.RpcError]
    ) -> domxml.BuiltDevice:
        try:
            return domxml.hotplug_device(params, kind)
        except (domxml.InvalidDomainXml, domxml.InvalidVmParams) as e:
            raise error(str(e)) from None

    # -- libvirt events ----------------------------------------------------------------------

    def on_domain_event(self, event: DomainEvent) -> None:
        """Apply one libvirt event (called in the reactor thread, in libvirt's order)."""
        vm = self._vms.get(event.vm_id)
        if vm is None or not self.ready:
            return
        meaning = interpret(event, vm.requests)
        starting = vm.state == VmState.WAIT_FOR_LAUNCH and not vm.requests.destroy
        if starting and VmEvent.STOPPED not in meaning.events:
            return  # The create call decides how a start ends; only a death on the way counts.
        for vm_event in meaning.events:
            self._transition(vm, vm_event, exit=meaning.exit, pause_code=meaning.pause_code)
