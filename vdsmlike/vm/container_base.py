"""The VM table every part of :class:`~vdsmlike.vm.container.VmContainer` shares.

:class:`ContainerBase` holds the VMs of this host by id and what each operation on them needs:
moving a VM through the state machine (:mod:`.states`) and publishing
``|virt|VM_status|<vmId>`` when its state changes, telling the state listeners, the per-VM
timers (boot, shutdown), the checks that refuse an operation in the wrong state, and calls to
the hypervisor and the hooks with their errors mapped to VDSM's. The container's parts
(:mod:`.container_recovery`, :mod:`.container_migration`, and :mod:`.container` itself with
create, destroy and the other verbs) subclass it. Everything runs in the reactor thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hooks.runner import NullHookRunner

from ..api import errors
from ..interfaces import IHookRunner, IHypervisor
from ..virt.errors import DomainNotFound, HypervisorError
from . import domxml
from .lifecycle import Exit
from .states import ExitReason, InvalidTransition, VmEvent, VmState, next_state
from .vm import Vm, status_details

Publish = Callable[[str, dict], None]
#: Told ``(vm, old state, new state)`` after every state change.
StateListener = Callable[[Vm, VmState, VmState], None]

_RUNNING = (VmState.POWERING_UP, VmState.UP, VmState.POWERING_DOWN, VmState.REBOOT_IN_PROGRESS)


@dataclass(frozen=True)
class ContainerConfig:
    """
    :ivar domain_type: force ``<domain type>`` ('qemu' for TCG, 'kvm'), or None to keep it.
    :ivar guest_wait_timeout: seconds a started VM is reported as "Powering up" before "Up".
    :ivar serial_dir: where VMs built from legacy params get their serial console file.
    """

    domain_type: str | None = "qemu"
    guest_wait_timeout: float = 60.0
    serial_dir: str | None = None


def status_event_id(vm_id: str) -> str:
    """The id of the status event of a VM, as VDSM names it."""
    return f"|virt|VM_status|{vm_id}"


class ContainerBase:
    """The VMs of this host, keyed by VM id, and the helpers every container operation uses."""

    log = Logger()

    def __init__(
        self,
        hypervisor: IHypervisor,
        *,
        clock: IReactorTime,
        publish: Publish,
        event_time: Callable[[], int],
        config: ContainerConfig = ContainerConfig(),
        hooks: IHookRunner | None = None,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hv = hypervisor
        self._clock = clock
        self._publish = publish
        self._event_time = event_time
        self._config = config
        self._hooks = hooks if hooks is not None else NullHookRunner()
        self._now = now
        self._monotonic = monotonic
        self._vms: dict[str, Vm] = {}
        self._timers: dict[tuple[str, str], IDelayedCall] = {}
        self._listeners: list[StateListener] = []
        self._paused_before_migration: set[str] = set()
        self.ready = False

    def get(self, vm_id: str) -> Vm:
        """:raises errors.NoSuchVM: if the container has no such VM."""
        vm = self._vms.get(vm_id.lower())
        if vm is None:
            raise errors.NoSuchVM(vmId=vm_id)
        return vm

    def vms(self) -> list[Vm]:
        """Every VM, Down and external ones included, in creation order."""
        return list(self._vms.values())

    def elapsed(self, vm: Vm) -> float | None:
        """Seconds since the VM started, or None if it has not."""
        if vm.started_monotonic is None:
            return None
        return max(0.0, self._monotonic() - vm.started_monotonic)

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(vm, old, new)`` after every state change, in the reactor thread."""
        self._listeners.append(listener)

    # -- internals ---------------------------------------------------------------------------

    def _transition(
        self, vm: Vm, event: VmEvent, *, exit: Exit | None = None, pause_code: str | None = None
    ) -> bool:
        """Move the VM by ``event`` if the table allows it; publish the change."""
        old = vm.state
        try:
            new = next_state(old, event)
        except InvalidTransition:
            self.log.debug(
                "vm {vm_id}: ignoring {event} in {state}",
                vm_id=vm.vm_id,
                event=event.value,
                state=old.value,
            )
            return False
        changed_code = pause_code is not None and pause_code != vm.pause_code
        if new == old and not changed_code:
            return False
        if pause_code is not None:
            vm.pause_code = pause_code
        vm.state = new
        vm.status_time = self._event_time()
        if new == VmState.DOWN:
            vm.exit = exit or Exit.of(ExitReason.GENERIC_ERROR)
            self._cancel_timers(vm.vm_id)
        if new == VmState.UP:
            vm.requests = replace(vm.requests, shutdown=False)
        if new == VmState.POWERING_UP:
            self._schedule(vm, "boot", self._config.guest_wait_timeout, self._booted, vm)
        if old == VmState.MIGRATION_DESTINATION:
            vm.requests = replace(vm.requests, incoming=False)
        self.log.info("vm {vm_id} {old} -> {new}", vm_id=vm.vm_id, old=old.value, new=new.value)
        self._emit(vm)
        for listener in list(self._listeners):
            try:
                listener(vm, old, new)
            except Exception:
                self.log.failure("state listener failed for {vm_id}", vm_id=vm.vm_id)
        return True

    def _booted(self, vm: Vm) -> None:
        if self._vms.get(vm.vm_id) is vm:
            self._transition(vm, VmEvent.BOOTED)

    def _emit(self, vm: Vm) -> None:
        details = status_details(vm, elapsed=self.elapsed(vm))
        self._publish(status_event_id(vm.vm_id), {vm.vm_id: details})

    def _schedule(self, vm: Vm, what: str, delay: float, fn: Callable, *args: Any) -> None:
        key = (vm.vm_id, what)
        old = self._timers.pop(key, None)
        if old is not None and old.active():
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            fn(*args)

        self._timers[key] = self._clock.callLater(delay, fire)

    def _cancel_timers(self, vm_id: str) -> None:
        for key in [k for k in self._timers if k[0] == vm_id]:
            call = self._timers.pop(key)
            if call.active():
                call.cancel()

    def _usable(self, vm_id: str) -> Vm:
        vm = self.get(vm_id)
        self._refuse_external(vm)
        if vm.is_down:
            raise errors.VMIsDown(vmId=vm.vm_id)
        if vm.state in (VmState.MIGRATION_SOURCE, VmState.MIGRATION_DESTINATION):
            raise errors.MigrationInProgress(vmId=vm.vm_id)
        return vm

    def _running(self, vm_id: str, allow: tuple[VmState, ...] = ()) -> Vm:
        vm = self._usable(vm_id)
        if vm.state not in _RUNNING + allow:
            raise errors.UnexpectedError(
                f"operation not possible in status {vm.state.value}", vmId=vm.vm_id
            )
        return vm

    @staticmethod
    def _refuse_external(vm: Vm) -> None:
        if vm.external:
            raise errors.UnsupportedOperation(
                "the VM is external (not created by this agent)", vmId=vm.vm_id
            )

    async def _call(
        self, vm: Vm, method: Callable, *args: Any, error: type[errors.RpcError] | None = None
    ) -> Any:
        """Call a hypervisor method for a VM, mapping its errors to VDSM's."""
        try:
            return await method(vm.vm_id, *args)
        except DomainNotFound:
            raise errors.NoSuchVM("the domain is gone", vmId=vm.vm_id) from None
        except HypervisorError as e:
            raise (error or errors.UnexpectedError)(str(e), vmId=vm.vm_id) from None

    async def _hook(
        self, point: str, payload: Any, vm: Vm, *, params: dict[str, str] | None = None
    ) -> tuple[Any, int | None]:
        """
        Run a hook point for a VM; ``params`` are a device's custom properties.

        :returns: the payload as the hooks left it, and the launch flags they asked for.
        :raises errors.HookError: when a hook of an aborting ``before_*`` point fails.
        """
        result = await self._hooks.run(
            point, payload, vm_id=vm.vm_id, custom=dict(vm.metadata.custom), params=params
        )
        return result.payload, result.launch_flags

    async def _save_metadata(self, vm: Vm, metadata: domxml.VmMetadata) -> None:
        vm.metadata = metadata
        try:
            await self._hv.set_metadata(vm.vm_id, domxml.metadata_element(metadata))
        except HypervisorError as e:
            self.log.warn("cannot save metadata of {vm_id}: {error}", vm_id=vm.vm_id, error=e)

    async def _refresh_xml(self, vm: Vm) -> None:
        self._set_xml(vm, await self._call(vm, self._hv.get_xml))

    def _set_xml(self, vm: Vm, xml: str) -> None:
        """Take the live XML, and the devices libvirt filled in (NIC target devs, aliases)."""
        vm.xml = xml
        try:
            vm.spec = domxml.parse_domain(xml)
        except domxml.InvalidDomainXml as e:
            self.log.warn("vm {vm_id}: live XML unparsable: {error}", vm_id=vm.vm_id, error=e)

    def _started_monotonic(self, start_time: float) -> float:
        """The monotonic time of wall-clock ``start_time`` (a VM's start kept in its metadata)."""
        return self._monotonic() - max(0.0, self._now() - start_time)
