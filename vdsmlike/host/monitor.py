"""What the agent knows about its host: the hypervisor's description, host facts gathered once,
and periodic psutil samples; the source of ``Host.getStats`` and ``Host.getCapabilities``.

Every read that blocks (psutil, /proc, /sys, dpkg) runs on the blocking runner, never in the
reactor thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from .. import __version__
from ..interfaces import IBlockingRunner, IHypervisor
from ..virt.events import HostInfo
from ..vm.states import VmState
from ..vm.vm import Vm
from .caps import HostFacts, capabilities, gather_host_facts
from .hwinfo import read_hardware_info
from .stats import HostStatsSampler, VmCounts, take_host_sample

_HOST_KEY = "host"


def vm_counts(vms: Iterable[Vm]) -> VmCounts:
    """Count VMs as ``Host.getStats`` reports them."""
    vms = list(vms)
    running = [vm for vm in vms if not vm.is_down]
    outgoing = sum(1 for vm in running if vm.state == VmState.MIGRATION_SOURCE)
    incoming = sum(1 for vm in running if vm.state == VmState.MIGRATION_DESTINATION)
    return VmCounts(
        vm_count=len(vms),
        vm_active=sum(1 for vm in running if vm.state != VmState.PAUSED),
        vm_migrating=outgoing + incoming,
        incoming=incoming,
        outgoing=outgoing,
        mem_committed_mib=sum(vm.spec.memory_kib for vm in running) // 1024,
    )


class HostMonitor:
    """Host facts and statistics, refreshed by :meth:`sample`."""

    log = Logger()

    def __init__(
        self,
        hypervisor: IHypervisor,
        runner: IBlockingRunner,
        *,
        disk_paths: tuple[str, ...],
        libvirt_uri: str,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._hv = hypervisor
        self._runner = runner
        self._disk_paths = disk_paths
        self._libvirt_uri = libvirt_uri
        self._sampler = HostStatsSampler()
        self._started = now()
        self.host_info: HostInfo | None = None
        self.facts: HostFacts | None = None

    async def start(self) -> None:
        """Read the host description and facts, and take the first sample."""
        self.host_info = await self._hv.host_info()
        self.facts = await self._runner.run(_HOST_KEY, gather_host_facts)
        await self.sample()

    async def sample(self) -> None:
        """Take one psutil sample of the host (on the runner)."""
        sample = await self._runner.run(_HOST_KEY, take_host_sample, disk_paths=self._disk_paths)
        self._sampler.update(sample)

    def stats(self, vms: Iterable[Vm], *, mom: dict | None = None) -> dict[str, Any]:
        """VDSM's ``HostStats`` from the last two samples."""
        return self._sampler.stats(vm_counts(vms), agent_started=self._started, mom=mom)

    def capabilities(self, *, hooks: dict, last_client_iface: str = "lo") -> dict[str, Any]:
        """VDSM's ``Host.getCapabilities`` answer."""
        assert self.host_info is not None and self.facts is not None, "start() first"
        return capabilities(
            self.host_info,
            facts=self.facts,
            hooks=hooks,
            libvirt_uri=self._libvirt_uri,
            software_version=__version__,
            last_client_iface=last_client_iface,
        )

    async def hardware_info(self) -> dict[str, str]:
        """The host's DMI identity (on the runner)."""
        return await self._runner.run(_HOST_KEY, read_hardware_info)
