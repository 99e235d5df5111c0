"""The embedded MOM's view of the agent: :class:`mom.interfaces.IMomAgent` over the agent's own
VM container, statistics monitor and tuning, called on the reactor thread.

MOM (as VDSM deploys it) reads and writes through the agent's JSON-RPC verbs; embedded, it
calls the same operations in-process: ``Host.getAllVmStats``, ``Host.getAllVmIoTunePolicies``,
``VM.setBalloonTarget``, ``VM.setCpuTuneQuota``/``Period``, ``VM.setIoTune``,
``Host.setKsmTune``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mom.interfaces import IMomAgent

from .vm.container import VmContainer
from .vm.monitor import VmStatsMonitor
from .vm.tune import VmTuning


@implementer(IMomAgent)
class AgentMomLink:
    """IMomAgent over one agent's container, VM statistics and tuning."""

    def __init__(self, container: VmContainer, monitor: VmStatsMonitor, tuning: VmTuning) -> None:
        self._vms, self._monitor, self._tuning = container, monitor, tuning

    def vm_stats(self) -> Deferred[list[dict[str, Any]]]:
        """:returns: a Deferred firing with ``Host.getAllVmStats``'s list."""
        vms = self._vms
        return succeed([self._monitor.vm_stats(vm, elapsed=vms.elapsed(vm)) for vm in vms.vms()])

    def io_tune_policies(self) -> Deferred[dict[str, Any]]:
        """:returns: a Deferred firing with ``Host.getAllVmIoTunePolicies``."""
        return Deferred.fromCoroutine(self._tuning.all_io_tune_policies())

    def set_balloon_target(self, vm_id: str, kib: int) -> Deferred[bool]:
        """``VM.setBalloonTarget``."""
        return Deferred.fromCoroutine(self._vms.set_balloon_target(vm_id, int(kib)))

    def set_cpu_tune(self, vm_id: str, quota: int, period: int) -> Deferred[bool]:
        """``VM.setCpuTunePeriod`` then ``VM.setCpuTuneQuota``, as MOM's controller sends both."""

        async def both() -> bool:
            await self._tuning.set_cpu_tune_period(vm_id, int(period))
            return await self._tuning.set_cpu_tune_quota(vm_id, int(quota))

        return Deferred.fromCoroutine(both())

    def set_io_tune(self, vm_id: str, tunables: list[dict[str, Any]]) -> Deferred[bool]:
        """``VM.setIoTune``."""
        return Deferred.fromCoroutine(self._tuning.set_io_tune(vm_id, tunables))

    def set_ksm_tune(self, params: dict[str, int]) -> Deferred[bool]:
        """``Host.setKsmTune``."""
        return Deferred.fromCoroutine(self._tuning.set_ksm_tune(params))
