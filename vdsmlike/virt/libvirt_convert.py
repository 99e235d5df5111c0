"""Pure conversions between libvirt's vocabulary and the adapter's.

What :class:`~vdsmlike.virt.libvirt.LibvirtHypervisor` reads from libvirt and writes to it,
without touching a connection: libvirt errors as ours (:func:`translate`), the few domain XML
facts the adapter needs (:func:`xml_uuid`, :func:`as_test_domain` for the test driver), the
bulk-stats keys ``virDomainGetInfo`` can fill for a driver whose ``getAllDomainStats`` reports
only ``state.*`` (:func:`stats_from_info`), and a node's description as :class:`HostInfo`
(:func:`host_info_from`).
"""

from __future__ import annotations

import re
from typing import Any

import libvirt
from defusedxml import ElementTree

from .errors import DomainExists, DomainNotFound, HypervisorError
from .events import HostInfo


def translate(
    error: libvirt.libvirtError, vm_id: str | None, *, creating: bool = False
) -> HypervisorError:
    """
    Map a libvirt error to ours: not found, exists, or a plain :class:`HypervisorError`.

    libvirt reports a duplicate as ``VIR_ERR_OPERATION_FAILED`` ("domain 'a' already exists
    with uuid ..." for a used name, "is already defined" for a used uuid) or, for the same name
    and uuid, ``VIR_ERR_OPERATION_INVALID`` ("domain 'a' is already active"); only a create is
    read that way, where nothing else says "already".
    """
    code = error.get_error_code()
    message = str(error)
    if code == libvirt.VIR_ERR_NO_DOMAIN and vm_id is not None:
        return DomainNotFound(vm_id)
    if code == libvirt.VIR_ERR_DOM_EXIST or (
        creating
        and code in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_OPERATION_INVALID)
        and "already" in message
    ):
        return DomainExists(message)
    return HypervisorError(message)


def xml_uuid(xml: str) -> str | None:
    """:returns: the lower-case ``<uuid>`` of domain ``xml``, or None if it has none."""
    try:
        root = ElementTree.fromstring(xml)
    except Exception as e:  # defusedxml raises several types for hostile or broken XML
        raise HypervisorError(f"invalid domain XML: {e}") from None
    text = root.findtext("uuid")
    return text.strip().lower() if text else None


def as_test_domain(xml: str) -> str:
    """:returns: ``xml`` with the root ``<domain type=...>`` changed to ``type='test'``."""
    return re.sub(r"(<domain\b[^>]*?\btype\s*=\s*)(['\"])[^'\"]*\2", r"\1\2test\2", xml, count=1)


def stats_from_info(info: list[int]) -> dict[str, int]:
    """The stats keys ``virDomainGetInfo`` can fill: ``[state, max KiB, KiB, vcpus, cpu ns]``."""
    _state, max_kib, kib, vcpus, cpu_ns = info
    return {
        "balloon.current": kib,
        "balloon.maximum": max_kib,
        "vcpu.current": vcpus,
        "vcpu.maximum": vcpus,
        "cpu.time": cpu_ns,
    }


def _version(number: int) -> tuple[int, int, int]:
    """libvirt's ``major * 1,000,000 + minor * 1,000 + micro`` as a tuple."""
    return (number // 1_000_000, number // 1_000 % 1_000, number % 1_000)


def host_info_from(
    *,
    info: list[Any],
    capabilities: str,
    hostname: str,
    lib_version: int,
    hv_version: int,
    hv_type: str,
) -> HostInfo:
    """
    Build a :class:`HostInfo` from what libvirt's connection says (pure).

    :param info: ``virNodeGetInfo``: model, MiB, cpus, MHz, nodes, sockets per node, cores,
        threads.
    :param capabilities: the ``virConnectGetCapabilities`` XML.
    """
    model, mib, cpus, mhz, nodes, sockets, cores, threads = info
    caps = ElementTree.fromstring(capabilities)
    host = caps.find("host")
    cpu = host.find("cpu") if host is not None else None
    arch = cpu.findtext("arch", "") if cpu is not None else ""
    cpu_model = (cpu.findtext("model") if cpu is not None else None) or model
    flags = tuple(f.get("name", "") for f in cpu.findall("feature")) if cpu is not None else ()
    machines: list[str] = []
    kvm = False
    for guest in caps.findall("guest"):
        guest_arch = guest.find("arch")
        if guest_arch is None or guest_arch.get("name") != arch:
            continue
        for machine in guest_arch.findall("machine"):
            if machine.text and machine.text not in machines:
                machines.append(machine.text)
        kvm = kvm or any(d.get("type") == "kvm" for d in guest_arch.findall("domain"))
    return HostInfo(
        memory_kib=mib * 1024,
        cpus=cpus,
        sockets=sockets * nodes,
        cores=cores,
        threads=threads,
        cpu_model=cpu_model,
        cpu_mhz=mhz,
        cpu_flags=flags,
        hostname=hostname,
        host_uuid=(host.findtext("uuid", "") if host is not None else "").lower(),
        emulated_machines=tuple(machines),
        kvm=kvm,
        lib_version=_version(lib_version),
        hv_version=_version(hv_version),
        hv_type=hv_type,
        numa_nodes=_numa_cells(host),
    )


def _numa_cells(host: Any) -> dict[int, dict]:
    """``{cell id: {"memory_kib": n, "cpus": [ids]}}`` from the capabilities' host topology."""
    cells: dict[int, dict] = {}
    if host is None:
        return cells
    for cell in host.findall("topology/cells/cell"):
        memory = cell.find("memory")
        kib = int(memory.text) if memory is not None and memory.text else 0
        if memory is not None and memory.get("unit", "KiB") == "MiB":
            kib *= 1024
        cpus = [int(c.get("id")) for c in cell.findall("cpus/cpu")]
        cells[int(cell.get("id", len(cells)))] = {"memory_kib": kib, "cpus": cpus}
    return cells
