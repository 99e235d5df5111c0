"""
libvirt domain XML for the agent: parse it safely, build it from VDSM's legacy params, keep our
per-VM state in its ``<metadata>``, and find devices in it.

Pure: no I/O, no reactor, no libvirt. This module is the front door; the work is split by idea:

- :mod:`.xmlsafe`: hostile-XML-safe parsing (defusedxml, size and depth caps), escaping and
  text-preserving splices; the errors :class:`InvalidDomainXml` and :class:`InvalidVmParams`.
- :mod:`.metadata`: :class:`VmMetadata` and our ``<vdsmlike:vm>`` element (format documented
  there), plus reading VDSM's ``<ovirt-vm:vm>``.
- :mod:`.devices`: disks and NICs (specs, legacy dicts, hotplug params, identity, hash).
- :mod:`.params`: checks of legacy params that name the key they refuse.

What :func:`build_domain` makes from legacy ``VM.create`` params: ``<domain type=...>`` with name,
uuid, ``<memory>`` = ``<currentMemory>`` = ``memSize`` MiB, ``<vcpu>`` = ``smp``, our metadata
(custom properties, per-device custom, ``launchPaused``), ``<os>`` with
``<type arch='x86_64' machine=...>hvm</type>`` and either direct kernel boot or ``<boot
dev='hd'/>``, ACPI, ``destroy``/``restart``/``destroy`` for poweroff/reboot/crash, then the
drives, the NICs, a serial port and console (file-backed at ``serial_path``, else pty) and a
virtio ``<memballoon>`` with ``<stats period='2'/>``. When ``kernel`` is given without
``kernelArgs``, the command line is ``console=ttyS0`` so the boot log reaches the serial file;
given ``kernelArgs`` are used exactly as they are (nothing is added).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..virt.events import METADATA_NS, METADATA_PREFIX
from . import params as p
from .devices import (
    BuiltDevice,
    CustomDevice,
    DiskSpec,
    NicSpec,
    custom_devices,
    device_from_params,
    device_identities,
    device_key,
    devices_hash,
    disk_spec,
    disk_xml,
    find_device,
    hotplug_device,
    nic_spec,
    nic_xml,
    replace_devices,
)
from .metadata import (
    OVIRT_VM_NS,
    VmMetadata,
    has_agent_metadata,
    metadata_element,
    metadata_from_tree,
    namespaced_element,
    parse_metadata,
    with_metadata,
)
from .xmlsafe import (
    MAX_XML_BYTES,
    InvalidDomainXml,
    InvalidVmParams,
    element_spans,
    encode,
    escape_attr,
    escape_text,
    parse_xml,
    set_attribute,
)

__all__ = [
    "METADATA_NS",
    "METADATA_PREFIX",
    "OVIRT_VM_NS",
    "MAX_XML_BYTES",
    "InvalidDomainXml",
    "InvalidVmParams",
    "VmMetadata",
    "DomainSpec",
    "DiskSpec",
    "NicSpec",
    "parse_domain",
    "parse_metadata",
    "metadata_element",
    "with_metadata",
    "has_agent_metadata",
    "set_domain_type",
    "build_domain",
    "BuiltDevice",
    "CustomDevice",
    "custom_devices",
    "device_from_params",
    "hotplug_device",
    "replace_devices",
    "device_identities",
    "device_key",
    "find_device",
    "devices_hash",
    "memory_kib",
]

#: Default command line for direct kernel boot without ``kernelArgs``.
DEFAULT_CMDLINE = "console=ttyS0"
#: The largest ``memSize`` accepted, MiB (16 TiB).
MAX_MEM_MIB = 16 * 1024 * 1024
#: The largest ``smp`` accepted.
MAX_VCPUS = 4096

_UNIT_POWERS = "kmgtpe"
_MAX_BYTES = 2**63 - 1
_DOMAIN_TYPE = re.compile(r"[a-z][a-z0-9]*\Z")
_Spec = TypeVar("_Spec", DiskSpec, NicSpec)


@dataclass(frozen=True)
class DomainSpec:
    """
    What the agent needs to know about a domain, read from its XML.

    :ivar vm_id: the lower-case UUID.
    :ivar domain_type: ``qemu``, ``kvm``, ``test``...
    :ivar memory_kib: ``<memory>``, KiB.
    :ivar current_memory_kib: ``<currentMemory>`` (at most ``memory_kib``), KiB.
    :ivar vcpus: ``<vcpu current=...>``, else ``<vcpu>``, else 1.
    :ivar has_balloon: a memballoon whose model is not ``none`` (QEMU adds a virtio one when
        the XML has none, so an absent one counts for ``qemu`` and ``kvm`` domains).
    :ivar serial_path: the source path of the first file-backed serial port (or console).
    """

    vm_id: str
    name: str
    domain_type: str
    memory_kib: int
    current_memory_kib: int
    vcpus: int
    metadata: VmMetadata
    has_balloon: bool
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    serial_path: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


# -- parsing ---------------------------------------------------------------------------------


def parse_domain(xml: str, *, max_bytes: int = MAX_XML_BYTES) -> DomainSpec:
    """
    Read a domain XML from anyone (an engine, a hook, libvirt), refusing hostile or broken XML.

    :param max_bytes: refuse larger documents (UTF-8 bytes).
    :returns: the domain's spec.
    :raises InvalidDomainXml: saying what is wrong: not well-formed (with line and column), a
        DTD or entity, too large, root not ``<domain>``, no type, missing or bad ``<uuid>`` or
        ``<name>``, bad memory or vCPU numbers or units, a disk without target, a bad MAC, a bad
        metadata value.
    """
    root = parse_xml(xml, max_bytes=max_bytes)
    if root.tag != "domain":
        raise InvalidDomainXml(f"root element must be <domain>, got <{root.tag}>")
    domain_type = root.get("type")
    if not domain_type:
        raise InvalidDomainXml("<domain> must have a type attribute")
    memory = _memory(root, "memory")
    if memory is None:
        raise InvalidDomainXml("missing <memory>")
    current = _memory(root, "currentMemory") or memory
    os = root.find("os")
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    return DomainSpec(
        vm_id=_uuid(root),
        name=_name(root),
        domain_type=domain_type,
        memory_kib=memory,
        current_memory_kib=min(current, memory),
        vcpus=_vcpus(root),
        metadata=metadata_from_tree(root),
        has_balloon=_has_balloon(devices, domain_type),
        disks=tuple(_each(devices, "disk", disk_spec)),
        nics=tuple(_each(devices, "interface", nic_spec)),
        serial_path=_serial_path(devices),
        kernel=_os_text(os, "kernel", strip=True),
        initrd=_os_text(os, "initrd", strip=True),
        cmdline=_os_text(os, "cmdline", strip=False),
    )


def _uuid(root: ET.Element) -> str:
    element = root.find("uuid")
    if element is None:
        raise InvalidDomainXml("missing <uuid>")
    value = (element.text or "").strip()
    if not p.is_uuid(value):
        raise InvalidDomainXml(f"<uuid> must be a UUID (8-4-4-4-12 hex digits), got {value!r}")
    return value.lower()


def _name(root: ET.Element) -> str:
    element = root.find("name")
    if element is None:
        raise InvalidDomainXml("missing <name>")
    if not (element.text or "").strip():
        raise InvalidDomainXml("<name> must not be empty")
    return element.text or ""


def memory_kib(value: str, unit: str | None, *, tag: str = "memory") -> int:
    """
    Convert a libvirt memory amount to KiB, rounding up as libvirt does.

    :param unit: libvirt's units, any case: none (KiB), b, bytes, KB, k, KiB, MB, M, MiB, GB, G,
        GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB.
    :raises InvalidDomainXml: for a non-positive or non-integer amount or an unknown unit.
    """
    value = value.strip()
    if not value.isascii() or not value.isdigit() or int(value) <= 0:
        raise InvalidDomainXml(f"<{tag}> must be a positive number, got {value!r}")
    total = int(value) * _unit_bytes(unit, tag)
    if total > _MAX_BYTES:
        raise InvalidDomainXml(f"<{tag}> is too large: {value} {unit or 'KiB'}")
    return -(-total // 1024)


def _unit_bytes(unit: str | None, tag: str) -> int:
    if unit is None or not unit.strip():
        return 1024
    u = unit.strip().lower()
    if u in ("b", "byte", "bytes"):
        return 1
    base = {"": 1024, "ib": 1024, "b": 1000}.get(u[1:])
    if base is None or u[0] not in _UNIT_POWERS:
        raise InvalidDomainXml(f"<{tag}> has an unknown unit {unit!r}")
    return base ** (_UNIT_POWERS.index(u[0]) + 1)


def _memory(root: ET.Element, tag: str) -> int | None:
    element = root.find(tag)
    if element is None:
        return None
    return memory_kib(element.text or "", element.get("unit"), tag=tag)


def _vcpus(root: ET.Element) -> int:
    element = root.find("vcpu")
    if element is None:
        return 1
    maximum = _count(element.text or "", "<vcpu>")
    current = element.get("current")
    if current is None:
        return maximum
    count = _count(current, "<vcpu current>")
    if count > maximum:
        raise InvalidDomainXml(f"<vcpu current> ({count}) exceeds <vcpu> ({maximum})")
    return count


def _count(value: str, what: str) -> int:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= MAX_VCPUS:
        raise InvalidDomainXml(f"{what} must be an integer from 1 to {MAX_VCPUS}, got {value!r}")
    return int(value)


def _each(devices: ET.Element, tag: str, read: Callable[[ET.Element], _Spec]) -> Iterator[_Spec]:
    for number, element in enumerate(devices.findall(tag), 1):
        try:
            yield read(element)
        except InvalidDomainXml as e:
            raise InvalidDomainXml(f"<{tag}> #{number}: {e}") from None


def _has_balloon(devices: ET.Element, domain_type: str) -> bool:
    balloon = devices.find("memballoon")
    if balloon is None:
        return domain_type in ("qemu", "kvm")
    return balloon.get("model", "none") != "none"


def _serial_path(devices: ET.Element) -> str | None:
    for tag in ("serial", "console"):
        for element in devices.findall(tag):
            source = element.find("source")
            if element.get("type") == "file" and source is not None and source.get("path"):
                return source.get("path")
    return None


def _os_text(os: ET.Element | None, tag: str, *, strip: bool) -> str | None:
    element = None if os is None else os.find(tag)
    value = "" if element is None else element.text or ""
    if not value.strip():
        return None
    return value.strip() if strip else value


def set_domain_type(xml: str, domain_type: str) -> str:
    """
    Rewrite ``<domain type=...>``, leaving every other byte as it was.

    :param domain_type: ``qemu`` (TCG), ``kvm``, ``test``...
    :raises InvalidDomainXml: for hostile or malformed XML or a root other than ``<domain>``.
    :raises ValueError: for a ``domain_type`` that is not a lower-case word.
    """
    if not _DOMAIN_TYPE.match(domain_type):
        raise ValueError(f"domain type must be a lower-case word, got {domain_type!r}")
    root = parse_xml(xml)
    if root.tag != "domain":
        raise InvalidDomainXml(f"root element must be <domain>, got <{root.tag}>")
    data = encode(xml)
    span = element_spans(data, max_depth=1)[0]
    return set_attribute(data, span, "type", domain_type).decode("utf-8")


# -- building --------------------------------------------------------------------------------


def build_domain(
    params: dict[str, Any],
    *,
    domain_type: str = "qemu",
    serial_path: str | None = None,
    emulator: str | None = None,
    machine: str | None = None,
) -> str:
    """
    Build libvirt domain XML from VDSM's legacy ``VM.create`` params (see the module docstring).

    :param params: ``vmId`` and ``vmName`` and ``memSize`` (MiB) required; ``smp``, ``kernel``,
        ``initrd``, ``kernelArgs``, ``drives``, ``nics``, ``custom``, ``launchPaused`` optional;
        other keys are ignored.
    :param domain_type: ``qemu`` (TCG) or ``kvm``, from the agent's config.
    :param serial_path: where the serial port writes; ``None`` for a pty.
    :param emulator: the QEMU binary; ``None`` lets libvirt choose.
    :param machine: the machine type; ``None`` lets libvirt choose.
    :raises InvalidVmParams: naming the bad key and why.
    :raises ValueError: for bad keyword arguments (they come from configuration).
    """
    params = p.mapping(params, "vmParams")
    for key in ("vmId", "vmName", "memSize"):
        if key not in params:
            raise InvalidVmParams(f"{key} is required")
    vm_id = p.uuid(params["vmId"], "vmId")
    name = _vm_name(params["vmName"])
    mem_kib = 1024 * p.integer(
        params["memSize"],
        "memSize",
        minimum=1,
        maximum=MAX_MEM_MIB,
        what="a positive integer (MiB)",
    )
    what = f"an integer from 1 to {MAX_VCPUS}"
    smp = p.integer(params.get("smp", 1), "smp", minimum=1, maximum=MAX_VCPUS, what=what)
    disks, nics, metadata = _devices_and_metadata(params)
    lines = [
        f"<domain type='{_config_word(domain_type, 'domain_type')}'>",
        f"  <name>{escape_text(name)}</name>",
        f"  <uuid>{vm_id}</uuid>",
        f"  <memory unit='KiB'>{mem_kib}</memory>",
        f"  <currentMemory unit='KiB'>{mem_kib}</currentMemory>",
        f"  <vcpu placement='static'>{smp}</vcpu>",
        f"  <metadata>{namespaced_element(metadata)}</metadata>",
        *_os(params, machine),
        "  <features><acpi/><apic/></features>",
        "  <on_poweroff>destroy</on_poweroff>",
        "  <on_reboot>restart</on_reboot>",
        "  <on_crash>destroy</on_crash>",
        "  <devices>",
        *_emulator(emulator),
        *(f"    {device}" for device in disks + nics),
        *_serial(serial_path),
        "    <memballoon model='virtio'><stats period='2'/></memballoon>",
        "  </devices>",
        "</domain>",
    ]
    return "\n".join(lines) + "\n"


def _vm_name(value: Any) -> str:
    name = p.text(value, "vmName")
    if "/" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidVmParams(f"vmName must not contain '/' or control characters, got {name!r}")
    return name


def _config_word(value: str, what: str) -> str:
    if not _DOMAIN_TYPE.match(value):
        raise ValueError(f"{what} must be a lower-case word, got {value!r}")
    return value


def _devices_and_metadata(params: dict[str, Any]) -> tuple[list[str], list[str], VmMetadata]:
    drives, nics = params.get("drives", []), params.get("nics", [])
    for key, value in (("drives", drives), ("nics", nics)):
        if not isinstance(value, list):
            raise InvalidVmParams(f"{key} must be a list, got {type(value).__name__}")
    used: set[str] = set()
    built = [disk_xml(d, f"drives[{i}]", used) for i, d in enumerate(drives)]
    built_nics = [nic_xml(n, f"nics[{i}]") for i, n in enumerate(nics)]
    device_custom: dict[str, dict[str, str]] = {}
    for device in built + built_nics:
        if device.custom:
            if device.key in device_custom:
                raise InvalidVmParams(f"two devices share the key {device.key!r}")
            device_custom[device.key] = device.custom
    metadata = VmMetadata(
        launch_paused=p.boolean(params.get("launchPaused", False), "launchPaused"),
        custom=p.custom(params.get("custom", {}), "custom"),
        device_custom=device_custom,
    )
    return [d.xml for d in built], [n.xml for n in built_nics], metadata


def _os(params: dict[str, Any], machine: str | None) -> list[str]:
    machine_attr = ""
    if machine is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", machine):
            raise ValueError(f"machine must be a machine type name, got {machine!r}")
        machine_attr = f" machine='{machine}'"
    lines = ["  <os>", f"    <type arch='x86_64'{machine_attr}>hvm</type>"]
    for key in ("initrd", "kernelArgs"):
        if key in params and "kernel" not in params:
            raise InvalidVmParams(f"{key} needs kernel (direct kernel boot)")
    if "kernel" in params:
        lines.append(f"    <kernel>{escape_text(p.path(params['kernel'], 'kernel'))}</kernel>")
        if "initrd" in params:
            lines.append(f"    <initrd>{escape_text(p.path(params['initrd'], 'initrd'))}</initrd>")
        cmdline = p.text(params.get("kernelArgs", DEFAULT_CMDLINE), "kernelArgs", empty=True)
        lines.append(f"    <cmdline>{escape_text(cmdline)}</cmdline>")
    else:
        lines.append("    <boot dev='hd'/>")
    return [*lines, "  </os>"]


def _emulator(emulator: str | None) -> list[str]:
    if emulator is None:
        return []
    if not emulator.startswith("/"):
        raise ValueError(f"emulator must be an absolute path, got {emulator!r}")
    return [f"    <emulator>{escape_text(emulator)}</emulator>"]


def _serial(serial_path: str | None) -> list[str]:
    if serial_path is None:
        return [
            "    <serial type='pty'><target port='0'/></serial>",
            "    <console type='pty'><target type='serial' port='0'/></console>",
        ]
    if not serial_path.startswith("/"):
        raise ValueError(f"serial_path must be an absolute path, got {serial_path!r}")
    source = f"<source path='{escape_attr(serial_path)}'/>"
    return [
        f"    <serial type='file'>{source}<target port='0'/></serial>",
        f"    <console type='file'>{source}<target type='serial' port='0'/></console>",
    ]
