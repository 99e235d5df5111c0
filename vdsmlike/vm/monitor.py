"""Periodic bulk sampling of every VM's libvirt statistics, and VDSM's ``VmStats`` built from it.

One ``bulk_stats()`` call samples all domains, as VDSM's ``VMBulkstatsMonitor`` does. A call
still running when the next tick comes is not doubled: the tick is skipped, so a stuck libvirt
cannot pile up threads; VMs whose last sample is older than ``stale_after`` report
``monitorResponse`` "-1".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from ..interfaces import IHypervisor
from . import domxml
from .stats import sampled_vm_stats
from .vm import Vm, status_details

#: What the monitor asks for a VM's tuning fields (``VmTuning.stats_fields``).
TuningFields = Callable[[Vm], dict[str, Any]]


@dataclass(frozen=True)
class _Sample:
    time: float
    values: dict[str, Any]


class VmStatsMonitor:
    """
    Keeps the last two bulk samples of every VM.

    :param tuning: gives a VM's tuning fields (``vcpuQuota``, ``vcpuPeriod``,
        ``vcpuUserLimit``, ``ioTune``); without it the defaults are reported and no ``ioTune``.
    """

    log = Logger()

    def __init__(
        self,
        hypervisor: IHypervisor,
        *,
        stale_after: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        tuning: TuningFields | None = None,
    ) -> None:
        self._hv = hypervisor
        self._stale_after = stale_after
        self._monotonic = monotonic
        self._tuning = tuning
        self._samples: dict[str, tuple[_Sample | None, _Sample]] = {}
        self._busy = False
        self.last_duration: float | None = None

    async def sample(self) -> None:
        """Take one bulk sample; skipped if the previous one has not finished."""
        if self._busy:
            self.log.warn("bulk stats still running; skipping this sample")
            return
        self._busy = True
        started = self._monotonic()
        try:
            stats = await self._hv.bulk_stats()
        finally:
            self._busy = False
        now = self._monotonic()
        self.last_duration = now - started
        fresh: dict[str, tuple[_Sample | None, _Sample]] = {}
        for vm_id, values in stats.items():
            previous = self._samples.get(vm_id)
            fresh[vm_id] = (previous[1] if previous else None, _Sample(now, values))
        self._samples = fresh

    def vm_stats(self, vm: Vm, *, elapsed: float | None) -> dict[str, Any]:
        """VDSM's ``VmStats`` of one VM: its status details plus the sampled fields."""
        details = status_details(vm, elapsed=elapsed)
        if vm.is_down:
            return details
        prev, cur = self._samples.get(vm.vm_id, (None, None))
        if cur is not None and self._monotonic() - cur.time > self._stale_after:
            details["monitorResponse"] = "-1"
        tune = self._tuning(vm) if self._tuning is not None else {}
        details.update(
            sampled_vm_stats(
                prev.values if prev else None,
                cur.values if cur else None,
                prev_time=prev.time if prev else None,
                cur_time=cur.time if cur else None,
                balloon_target=vm.metadata.balloon_target
                if vm.metadata.balloon_target is not None
                else (vm.spec.current_memory_kib if vm.spec.has_balloon else None),
                ballooning_enabled=vm.spec.has_balloon and vm.metadata.ballooning_enabled,
                interfaces=_interfaces(vm.spec),
                cpu_tune=tune,
                io_tune=tune.get("ioTune"),
            )
        )
        return details


def _interfaces(spec: domxml.DomainSpec) -> dict[str, dict[str, str]]:
    return {
        nic.target_dev: {"macAddr": nic.mac, "name": nic.target_dev}
        for nic in spec.nics
        if nic.target_dev
    }
