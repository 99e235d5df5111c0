"""Recovery: after an agent restart, the container re-adopts what the hypervisor runs.

libvirt is the truth about running VMs (our per-VM state lives in each domain's ``<metadata>``),
so :meth:`ContainerRecovery.recover` rebuilds the container from ``list_domains`` alone: our
domains with their state, start time and balloon target, the others as external, read-only
VMs. Until it is done the container is not ``ready`` and libvirt events are not applied.
"""

from __future__ import annotations

from ..virt.events import DomainInfo
from . import domxml
from .container_base import ContainerBase
from .lifecycle import Exit
from .states import ExitReason, VmState, recovered_state
from .vm import Vm


class ContainerRecovery(ContainerBase):
    """Re-adopting the hypervisor's domains (a part of :class:`~.container.VmContainer`)."""

    async def recover(self) -> int:
        """
        Re-adopt every domain the hypervisor runs: ours (with agent metadata) with their state,
        start time and balloon target; the others as external, read-only VMs.

        :returns: the number of VMs adopted; ``ready`` is True afterwards.
        """
        for info in await self._hv.list_domains():
            self._adopt(info)
        self.ready = True
        for vm in self.vms():
            self._emit(vm)
        return len(self._vms)

    def _adopt(self, info: DomainInfo) -> None:
        try:
            spec = domxml.parse_domain(info.xml)
        except domxml.InvalidDomainXml as e:
            self.log.warn("cannot adopt domain {name}: {error}", name=info.name, error=e)
            return
        external = not domxml.has_agent_metadata(info.xml)
        vm = Vm(
            spec=spec,
            xml=info.xml,
            state=recovered_state(info.state),
            status_time=self._event_time(),
            metadata=spec.metadata,
            external=external,
        )
        if vm.state == VmState.DOWN:
            vm.exit = Exit.of(ExitReason.LIBVIRT_DOMAIN_MISSING)
        if spec.metadata.start_time is not None:
            vm.started_monotonic = self._started_monotonic(spec.metadata.start_time)
        self._vms[vm.vm_id] = vm
        self.log.info(
            "recovered vm {vm_id} ({name}) as {state}{ext}",
            vm_id=vm.vm_id,
            name=vm.name,
            state=vm.state.value,
            ext=" (external)" if external else "",
        )
