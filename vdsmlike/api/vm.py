"""``VM.*`` verb handlers: thin wrappers that hand validated params to the VM container."""

from __future__ import annotations

from typing import Any

from hooks.runner import NullHookRunner

from ..interfaces import IHookRunner
from ..vm.console import SerialConsole
from ..vm.consolewindow import DEFAULT_SIZE
from ..vm.container import VmContainer
from ..vm.monitor import VmStatsMonitor
from ..vm.tune import VmTuning
from . import errors
from .hooked import around_hooks
from .verbs import verb


class VmApi:
    """The ``VM`` namespace. Params arrive validated against ``schema/agent.yml``."""

    def __init__(
        self,
        container: VmContainer,
        monitor: VmStatsMonitor,
        *,
        hooks: IHookRunner | None = None,
        tuning: VmTuning | None = None,
        console: SerialConsole | None = None,
    ) -> None:
        self._vms = container
        self._monitor = monitor
        self._hooks = hooks if hooks is not None else NullHookRunner()
        self._tuning = tuning
        self._console = console

    @verb("VM.create")
    async def create(self, vmParams: dict[str, Any], vmID: str | None = None) -> dict[str, Any]:
        """Create and start a VM from domain XML or legacy params; returns at WaitForLaunch."""
        return await self._vms.create(vmID, vmParams)

    @verb("VM.destroy")
    async def destroy(self, vmID: str, gracefulAttempts: int = 1) -> bool:
        """Stop the VM at once and remove it, Down VMs included."""
        return await self._vms.destroy(vmID, gracefulAttempts)

    @verb("VM.shutdown")
    async def shutdown(
        self,
        vmID: str,
        delay: int = 30,
        message: str = "",
        reboot: bool = False,
        timeout: int = 30,
        force: bool = False,
    ) -> bool:
        """
        Ask the guest to power off (ACPI) or reboot. ``delay`` and ``message`` are for a guest
        agent's user notice; without a guest agent they are accepted and unused.
        """
        return await self._vms.shutdown(vmID, timeout=timeout, reboot=reboot, force=force)

    @verb("VM.reset")
    async def reset(self, vmID: str) -> bool:
        """Reset the VM's virtual hardware."""
        return await self._vms.reset(vmID)

    @verb("VM.pause")
    async def pause(self, vmID: str) -> bool:
        """Pause the VM's vCPUs."""
        return await self._vms.pause(vmID)

    @verb("VM.cont")
    async def cont(self, vmID: str) -> bool:
        """Resume a paused VM."""
        return await self._vms.cont(vmID)

    @verb("VM.getStats")
    async def get_stats(self, vmID: str) -> list[dict[str, Any]]:
        """The VM's ``VmStats``, as a one-element list as VDSM returns it."""
        vm = self._vms.get(vmID)
        return await around_hooks(
            self._hooks,
            "get_vm_stats",
            lambda: [self._monitor.vm_stats(vm, elapsed=self._vms.elapsed(vm))],
        )

    @verb("VM.setBalloonTarget")
    async def set_balloon_target(self, vmID: str, target: int) -> bool:
        """Set the balloon target, in KiB."""
        return await self._vms.set_balloon_target(vmID, target)

    @verb("VM.hotplugDisk")
    async def hotplug_disk(self, vmID: str, params: dict[str, Any]) -> dict[str, Any]:
        """Hot-plug a disk."""
        return await self._vms.hotplug(vmID, params, "disk")

    @verb("VM.hotunplugDisk")
    async def hotunplug_disk(self, vmID: str, params: dict[str, Any]) -> dict[str, Any]:
        """Hot-unplug a disk."""
        return await self._vms.hotunplug(vmID, params, "disk")

    @verb("VM.hotplugNic")
    async def hotplug_nic(self, vmID: str, params: dict[str, Any]) -> dict[str, Any]:
        """Hot-plug a NIC."""
        return await self._vms.hotplug(vmID, params, "nic")

    @verb("VM.hotunplugNic")
    async def hotunplug_nic(self, vmID: str, params: dict[str, Any]) -> dict[str, Any]:
        """Hot-unplug a NIC."""
        return await self._vms.hotunplug(vmID, params, "nic")

    @verb("VM.getConsoleOutput")
    async def get_console_output(
        self, vmID: str, offset: int | None = None, size: int = DEFAULT_SIZE
    ) -> dict[str, Any]:
        """Read the guest's serial console log: the bytes from ``offset``, or its tail."""
        if self._console is None:
            raise errors.NotImplementedVerb("the serial console is not configured in this agent")
        return await self._console.read(vmID, offset=offset, size=size)

    def _tuned(self) -> VmTuning:
        if self._tuning is None:
            raise errors.NotImplementedVerb("tuning is not configured in this agent")
        return self._tuning

    @verb("VM.setCpuTuneQuota")
    async def set_cpu_tune_quota(self, vmID: str, quota: int) -> bool:
        """Set the vCPU bandwidth quota, µs per period (negative: unlimited)."""
        return await self._tuned().set_cpu_tune_quota(vmID, quota)

    @verb("VM.setCpuTunePeriod")
    async def set_cpu_tune_period(self, vmID: str, period: int) -> bool:
        """Set the vCPU bandwidth period, µs."""
        return await self._tuned().set_cpu_tune_period(vmID, period)

    @verb("VM.setIoTune")
    async def set_io_tune(self, vmID: str, tunables: list[dict[str, Any]]) -> bool:
        """Change the IO limits of disks, merged over their current ones."""
        return await self._tuned().set_io_tune(vmID, tunables)

    @verb("VM.getIoTune")
    async def get_io_tune(self, vmID: str) -> list[dict[str, Any]]:
        """Every disk's current IO limits, read from libvirt."""
        return await self._tuned().get_io_tune(vmID)

    @verb("VM.getIoTunePolicy")
    def get_io_tune_policy(self, vmID: str) -> list[dict[str, Any]]:
        """The VM's IO limit policy from its domain XML."""
        return self._tuned().get_io_tune_policy(vmID)
