"""The agent's record of one VM, and the pure views of it that go on the wire.

A :class:`Vm` holds what libvirt does not: the VDSM state, when it last changed, how the VM
exited, and what the agent has asked of it. Everything that must survive an agent restart is in
``metadata`` (:class:`~vdsmlike.vm.domxml.VmMetadata`), which lives in the domain XML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .domxml import DomainSpec, VmMetadata, devices_hash
from .lifecycle import Exit, Requests
from .states import VmState

VM_TYPE = "kvm"


@lru_cache(maxsize=16384)
def _devices_hash(xml: str) -> str:
    # Hashing canonicalizes the XML (~0.3 ms); a VM's XML changes rarely and stats are read
    # for every VM on every poll, so remember it per XML text.
    return devices_hash(xml)


@dataclass
class Vm:
    """
    One VM of this host.

    :ivar status_time: VDSM ``event_time()`` of the last state change, in ms.
    :ivar external: a domain the agent did not create and has no metadata for; read-only.
    """

    spec: DomainSpec
    xml: str
    state: VmState
    status_time: int
    metadata: VmMetadata
    exit: Exit | None = None
    pause_code: str = "NOERR"
    requests: Requests = field(default_factory=Requests)
    external: bool = False
    started_monotonic: float | None = None

    @property
    def vm_id(self) -> str:
        """The VM's UUID."""
        return self.spec.vm_id

    @property
    def name(self) -> str:
        """The VM's name."""
        return self.spec.name

    @property
    def is_down(self) -> bool:
        """Whether the VM has reached Down (final)."""
        return self.state == VmState.DOWN


def status_details(vm: Vm, *, elapsed: float | None) -> dict[str, Any]:
    """
    The ``StatusDetails`` sent in ``|virt|VM_status|<vmId>`` events and used as the base of
    ``VmStats``.

    :param elapsed: seconds since the VM started, or None if unknown.
    """
    if vm.is_down:
        return exited_details(vm)
    details: dict[str, Any] = {
        "vmId": vm.vm_id,
        "vmName": vm.name,
        "vmType": VM_TYPE,
        "status": vm.state.value,
        "statusTime": vm.status_time,
        "elapsedTime": str(int(elapsed or 0)),
        "monitorResponse": "0",
        "pauseCode": vm.pause_code,
        "timeOffset": "0",
        "clientIp": "",
        "displayInfo": [],
        "hash": _devices_hash(vm.xml),
        "vmJobs": {},
        "guestIPs": "",
    }
    if vm.external:
        details["external"] = True
    return details


def exited_details(vm: Vm) -> dict[str, Any]:
    """The fields VDSM reports for a Down VM."""
    exit = vm.exit
    assert exit is not None, "a Down VM always has exit details"
    return {
        "vmId": vm.vm_id,
        "vmName": vm.name,
        "status": vm.state.value,
        "statusTime": vm.status_time,
        "exitCode": int(exit.code),
        "exitReason": int(exit.reason),
        "exitMessage": exit.message,
        "timeOffset": "0",
    }


def vm_definition(vm: Vm) -> dict[str, Any]:
    """The ``VmDefinition`` returned by ``VM.create``, hotplug verbs and ``Host.getVMFullList``."""
    spec = vm.spec
    definition: dict[str, Any] = {
        "vmId": vm.vm_id,
        "vmName": vm.name,
        "status": vm.state.value,
        "statusTime": vm.status_time,
        "memSize": spec.memory_kib // 1024,
        "smp": str(spec.vcpus),
        "vmType": VM_TYPE,
        "custom": dict(vm.metadata.custom),
        "xml": vm.xml,
    }
    if spec.kernel:
        definition["kernel"] = spec.kernel
    if spec.initrd:
        definition["initrd"] = spec.initrd
    if spec.cmdline:
        definition["kernelArgs"] = spec.cmdline
    if vm.metadata.launch_paused:
        definition["launchPaused"] = True
    if vm.external:
        definition["external"] = True
    return definition
