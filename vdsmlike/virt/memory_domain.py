"""The in-memory twin's domains: the record of one simulated domain and its XML, both ways.

Pure: :func:`domain_from_xml` reads what :class:`~vdsmlike.virt.memory.MemoryHypervisor`
simulates from domain XML (uuid, name, memory with libvirt's units, vCPUs, disk targets) and
refuses what libvirt would refuse with an "XML error"; :func:`live_xml` writes the domain back
as libvirt's live XML shows it (the domain id, the current balloon size, our ``<metadata>``
element in its namespace).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as StdElementTree

from defusedxml import ElementTree

from .errors import HypervisorError
from .events import METADATA_NS, METADATA_PREFIX, CpuTune, DomainState
from .tuning import block_io_tune

StdElementTree.register_namespace(METADATA_PREFIX, METADATA_NS)

_UNITS = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
}


@dataclass
class MemoryDomain:
    """One simulated domain."""

    vm_id: str
    name: str
    xml: str
    max_kib: int
    current_kib: int
    vcpus: int
    state: DomainState = DomainState.RUNNING
    reason: int = 1
    cpu_ns: int = 0
    running_since: float | None = None
    ignores_shutdown: bool = False
    metadata: str | None = None
    pending: list[Any] = field(default_factory=list)
    cpu_tune: CpuTune = CpuTune()
    io_tune: dict[str, dict[str, int]] = field(default_factory=dict)


def _kib(element: Any) -> int:
    unit = element.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown suffix {unit!r}")
    return int(int(element.text.strip()) * _UNITS[unit])


def domain_from_xml(xml: str) -> MemoryDomain:
    """Read uuid, name, memory and vCPUs from domain XML; :raises HypervisorError: if invalid."""
    try:
        root = ElementTree.fromstring(xml)
        if root.tag != "domain":
            raise ValueError("the root element is not <domain>")
        name = (root.findtext("name") or "").strip()
        if not name:
            raise ValueError("missing domain name")
        vm_id = (root.findtext("uuid") or str(uuidlib.uuid4())).strip().lower()
        uuidlib.UUID(vm_id)
        memory = root.find("memory")
        max_kib = _kib(memory) if memory is not None else 131072
        current = root.find("currentMemory")
        vcpu = root.find("vcpu")
        vcpus = int(vcpu.get("current") or vcpu.text.strip()) if vcpu is not None else 1
        current_kib = _kib(current) if current is not None else max_kib
        disks = [target.get("dev") for target in root.findall("devices/disk/target")]
    except Exception as e:  # defusedxml and int() raise several types
        raise HypervisorError(f"XML error: {e}") from None
    domain = MemoryDomain(
        vm_id, name, xml, max_kib, current_kib, vcpus, cpu_tune=CpuTune(vcpus=vcpus)
    )
    domain.io_tune = {dev: block_io_tune({}) for dev in disks if dev}
    return domain


def _in_namespace(element: Any) -> Any:
    for e in element.iter():
        if isinstance(e.tag, str) and not e.tag.startswith("{"):
            e.tag = f"{{{METADATA_NS}}}{e.tag}"
    return element


def live_xml(domain: MemoryDomain, domain_id: int) -> str:
    """:returns: ``domain``'s live XML: ``id`` set, ``<currentMemory>`` and our metadata as now."""
    root = ElementTree.fromstring(domain.xml)
    root.set("id", str(domain_id))
    current = root.find("currentMemory")
    if current is None:
        current = StdElementTree.SubElement(root, "currentMemory")
    current.set("unit", "KiB")
    current.text = str(domain.current_kib)
    if domain.metadata is not None:
        metadata = root.find("metadata")
        if metadata is None:
            metadata = StdElementTree.Element("metadata")
            root.insert(2, metadata)
        for child in list(metadata):
            if child.tag.startswith(f"{{{METADATA_NS}}}"):
                metadata.remove(child)
        metadata.append(_in_namespace(ElementTree.fromstring(domain.metadata)))
    return StdElementTree.tostring(root, encoding="unicode")
