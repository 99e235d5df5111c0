"""
Disk and NIC device XML: read from a domain, built from VDSM's legacy dicts, found for hotplug.

Pure: no I/O. Legacy drive dict keys: ``path``, ``format`` (raw | qcow2, default raw), ``iface``
(virtio | ide | scsi | sata; default virtio, ide for a cdrom), ``index`` or ``name`` (the target
dev, e.g. ``vdb``), ``readonly``, ``device`` (disk | cdrom), ``custom``. A path under ``/dev/``
makes a block disk; a cdrom without a path is an empty tray. Legacy NIC dict keys: ``macAddr``,
``network`` or ``bridge`` (neither: user-mode networking), ``nicModel`` (virtio | e1000 |
rtl8139, default virtio), ``custom`` (needs ``macAddr``, which keys it).

A device's identity (:func:`device_key`) is a disk's target dev, else its alias, else its source
path; a NIC's MAC, else its alias; compared case-insensitively.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import params as p
from .metadata import metadata_from_tree
from .xmlsafe import (
    InvalidDomainXml,
    InvalidVmParams,
    element_spans,
    encode,
    escape_attr,
    parse_xml,
    serialize,
    splice,
)

#: The element name of each hotpluggable device kind.
DEVICE_TAGS = {"disk": "disk", "nic": "interface"}
#: The legacy params key of each kind.
LEGACY_KEYS = {"disk": "drive", "nic": "nic"}

_PREFIX = {"virtio": "vd", "ide": "hd", "scsi": "sd", "sata": "sd"}
_MAX_INDEX = {"ide": 3}
_LAST_INDEX = 26 + 26 * 26 - 1  # "zz"


@dataclass(frozen=True)
class DiskSpec:
    """A disk of a domain: ``device`` is disk, cdrom, floppy or lun; ``format`` the driver type."""

    target_dev: str
    bus: str | None
    source_path: str | None
    device: str = "disk"
    alias: str | None = None
    format: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class NicSpec:
    """A network interface of a domain; ``type`` is network, bridge, user, ..."""

    mac: str | None
    model: str | None
    network: str | None = None
    bridge: str | None = None
    target_dev: str | None = None
    alias: str | None = None
    type: str = "network"


@dataclass(frozen=True)
class BuiltDevice:
    """Device XML built from a legacy dict, its identity and its custom properties."""

    xml: str
    key: str
    custom: dict[str, str] = field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------


def _attr(element: ET.Element, child: str, name: str) -> str | None:
    found = element.find(child)
    return None if found is None else found.get(name)


def disk_spec(element: ET.Element) -> DiskSpec:
    """:returns: the facts of a ``<disk>``. :raises InvalidDomainXml: without ``<target dev>``."""
    target = _attr(element, "target", "dev")
    if not target:
        raise InvalidDomainXml("<disk> has no <target dev=...>")
    source = element.find("source")
    path = None
    if source is not None:
        path = source.get("file") or source.get("dev") or source.get("name")
    return DiskSpec(
        target_dev=target,
        bus=_attr(element, "target", "bus"),
        source_path=path,
        device=element.get("device", "disk"),
        alias=_attr(element, "alias", "name"),
        format=_attr(element, "driver", "type"),
        readonly=element.find("readonly") is not None,
    )


def nic_spec(element: ET.Element) -> NicSpec:
    """:returns: the facts of an ``<interface>``. :raises InvalidDomainXml: for a bad MAC."""
    mac = _attr(element, "mac", "address")
    if mac is not None:
        if not p.is_mac(mac):
            raise InvalidDomainXml(f"<interface> has an invalid <mac address={mac!r}>")
        mac = mac.lower()
    return NicSpec(
        mac=mac,
        model=_attr(element, "model", "type"),
        network=_attr(element, "source", "network"),
        bridge=_attr(element, "source", "bridge"),
        target_dev=_attr(element, "target", "dev"),
        alias=_attr(element, "alias", "name"),
        type=element.get("type", "network"),
    )


def _identities(element: ET.Element) -> list[str]:
    if element.tag == "disk":
        source = element.find("source")
        path = None if source is None else source.get("file") or source.get("dev")
        found = [_attr(element, "target", "dev"), _attr(element, "alias", "name"), path]
    else:
        found = [_attr(element, "mac", "address"), _attr(element, "alias", "name")]
    return [key.lower() for key in found if key]


def device_identities(device_xml: str) -> list[str]:
    """
    :returns: every identity of a disk or NIC (target dev, MAC, alias, source path),
        lower-case, best first; empty for other devices.
    :raises InvalidDomainXml: for bad XML.
    """
    element = parse_xml(device_xml)
    return _identities(element) if element.tag in DEVICE_TAGS.values() else []


def device_key(device_xml: str) -> str:
    """
    :returns: the identity used to find a device again: a disk's target dev, a NIC's MAC
        (lower-case), else the alias (else a disk's source path).
    :raises InvalidDomainXml: for bad XML, a device that is not a disk or NIC, or one with no
        identity.
    """
    element = parse_xml(device_xml)
    if element.tag not in DEVICE_TAGS.values():
        raise InvalidDomainXml(f"expected <disk> or <interface>, got <{element.tag}>")
    keys = _identities(element)
    if not keys:
        raise InvalidDomainXml(f"<{element.tag}> has nothing that identifies it")
    return keys[0]


def find_device(domain_xml: str, kind: str, key: str) -> str | None:
    """
    :param kind: ``"disk"`` or ``"nic"``.
    :param key: an identity from :func:`device_key`.
    :returns: the XML of the device of that kind with that identity in the domain, or ``None``.
    :raises InvalidDomainXml: for bad XML.
    """
    devices = parse_xml(domain_xml).find("devices")
    if devices is None:
        return None
    for element in devices.findall(_tag(kind)):
        if key.lower() in _identities(element):
            return serialize(element)
    return None


def devices_hash(domain_xml: str) -> str:
    """
    :returns: a stable hash of the domain's ``<devices>`` (canonical XML, whitespace ignored),
        for the ``hash`` field of VM stats: it changes when a device does, not otherwise.
    :raises InvalidDomainXml: for bad XML.
    """
    devices = parse_xml(domain_xml).find("devices")
    canonical = "" if devices is None else ET.canonicalize(serialize(devices), strip_text=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class CustomDevice:
    """A device of a domain that has custom properties (the ones ``*_device_*`` hooks see)."""

    key: str
    xml: str
    custom: dict[str, str]


def custom_devices(
    domain_xml: str, device_custom: Mapping[str, Mapping[str, str]]
) -> list[CustomDevice]:
    """
    :param device_custom: custom properties per device identity, as in the VM's metadata.
    :returns: the disks and NICs of the domain that have custom properties, in document order.
    :raises InvalidDomainXml: for bad XML.
    """
    if not device_custom:
        return []
    found = []
    for element in _device_elements(parse_xml(domain_xml)):
        key = next((k for k in _identities(element) if k in device_custom), None)
        if key is not None:
            found.append(CustomDevice(key, serialize(element), dict(device_custom[key])))
    return found


def replace_devices(domain_xml: str, replacements: Mapping[str, str]) -> str:
    """
    Put new XML in place of devices, leaving every other byte of the domain as it was.

    :param replacements: new device XML (one element, any device type) by the identity of the
        disk or NIC it replaces; identities not in the domain are ignored.
    :returns: the new domain XML.
    :raises InvalidDomainXml: for bad domain or device XML.
    """
    if not replacements:
        return domain_xml
    root = parse_xml(domain_xml)
    data = encode(domain_xml)
    spans = element_spans(data, max_depth=3)
    holder = next((s for s in spans if s.path[1:] == ("devices",)), None)
    if holder is None:
        return domain_xml
    children = [s for s in spans if len(s.path) == 3 and holder.start < s.start < holder.end]
    edits = []
    for element, span in zip(_device_elements(root, every=True), children, strict=True):
        key = next((k for k in _identities(element) if k in replacements), None)
        if element.tag in DEVICE_TAGS.values() and key is not None:
            new = serialize(parse_xml(replacements[key])).encode("utf-8")
            edits.append((span.start, span.end, new))
    return splice(data, edits).decode("utf-8")


def _device_elements(root: ET.Element, *, every: bool = False) -> list[ET.Element]:
    """:returns: the disks and NICs under ``<devices>`` (every device with ``every``)."""
    devices = root.find("devices")
    if devices is None:
        return []
    return [
        child
        for child in devices
        if isinstance(child.tag, str) and (every or child.tag in DEVICE_TAGS.values())
    ]


# -- hotplug params --------------------------------------------------------------------------


def device_from_params(params: dict[str, Any], kind: str) -> str:
    """:returns: the device XML of hotplug params; see :func:`hotplug_device`."""
    return hotplug_device(params, kind).xml


def hotplug_device(params: dict[str, Any], kind: str) -> BuiltDevice:
    """
    The device of hotplug params, VDSM 4.2+ or legacy, with its custom properties.

    :param params: ``{"xml": "<devices><disk .../></devices>"}`` (optionally wrapped, e.g. in
        ``<hotplug>`` next to a ``<metadata>`` whose ``<vdsmlike:vm>`` or ``<ovirt-vm:vm>`` holds
        the device's custom properties, as VDSM's engine sends them), or legacy
        ``{"drive": {...}}`` / ``{"nic": {...}}`` with an optional ``custom`` dict.
    :param kind: ``"disk"`` or ``"nic"``.
    :returns: the one device's XML, its identity (empty when it has none and no custom
        properties need one) and its custom properties.
    :raises InvalidDomainXml: for bad XML, not exactly one device of the right kind, or custom
        properties that are not valid environment names.
    :raises InvalidVmParams: for bad legacy params.
    """
    tag = _tag(kind)
    p.mapping(params, "params")
    if "xml" in params:
        return _device_from_xml(params["xml"], tag)
    legacy = LEGACY_KEYS[kind]
    if legacy not in params:
        raise InvalidVmParams(f"params need 'xml' or '{legacy}'")
    if kind == "disk":
        return disk_xml(params[legacy], legacy, set(), need_target=True)
    return nic_xml(params[legacy], legacy)


def _tag(kind: str) -> str:
    if kind not in DEVICE_TAGS:
        raise ValueError(f"kind must be 'disk' or 'nic', got {kind!r}")
    return DEVICE_TAGS[kind]


def _device_from_xml(xml: Any, tag: str) -> BuiltDevice:
    root = parse_xml(xml)
    devices = root if root.tag == "devices" else root.find("devices")
    if devices is None:
        raise InvalidDomainXml(f"expected <devices> (or a wrapper around it), got <{root.tag}>")
    children = [child for child in devices if isinstance(child.tag, str)]
    if len(children) != 1 or children[0].tag != tag:
        found = ", ".join(f"<{child.tag}>" for child in children) or "nothing"
        raise InvalidDomainXml(f"<devices> must hold exactly one <{tag}>, found {found}")
    device = children[0]
    if tag == "interface":
        nic_spec(device)
    keys = _identities(device)
    wrapped = metadata_from_tree(root).device_custom if root is not devices else {}
    custom = next((wrapped[key] for key in keys if key in wrapped), {})
    return BuiltDevice(serialize(device), keys[0] if keys else "", dict(custom))


# -- building from legacy dicts --------------------------------------------------------------


def disk_name(prefix: str, index: int) -> str:
    """:returns: the target dev for a bus prefix and index: vda, vdz, vdaa, ..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def disk_xml(drive: Any, where: str, used: set[str], *, need_target: bool = False) -> BuiltDevice:
    """
    Build a ``<disk>`` from a legacy drive dict.

    :param where: how messages name the dict, e.g. ``"drives[1]"``.
    :param used: target devs taken already; the new one is added.
    :param need_target: refuse a drive without ``index`` or ``name`` (hotplug has no context).
    :raises InvalidVmParams: naming the bad key.
    """
    drive = p.mapping(drive, where)
    device = p.choice(drive.get("device", "disk"), f"{where}.device", ("disk", "cdrom"))
    default_iface = "ide" if device == "cdrom" else "virtio"
    iface = p.choice(drive.get("iface", default_iface), f"{where}.iface", _PREFIX)
    if device == "cdrom" and iface == "virtio":
        raise InvalidVmParams(f"{where}.iface virtio cannot carry a cdrom; use ide, scsi or sata")
    fmt = p.choice(drive.get("format", "raw"), f"{where}.format", ("raw", "qcow2"))
    readonly = device == "cdrom" or p.boolean(drive.get("readonly", False), f"{where}.readonly")
    path = drive.get("path")
    if device == "disk" or path:
        path = p.path(path, f"{where}.path")
    target = _target(drive, where, iface, used, need_target)
    custom = p.custom(drive.get("custom", {}), f"{where}.custom")
    kind = "block" if path and path.startswith("/dev/") else "file"
    attribute = "dev" if kind == "block" else "file"
    source = f"<source {attribute}='{escape_attr(path)}'/>" if path else ""
    xml = (
        f"<disk type='{kind}' device='{device}'><driver name='qemu' type='{fmt}'/>{source}"
        f"<target dev='{target}' bus='{iface}'/>{'<readonly/>' if readonly else ''}</disk>"
    )
    return BuiltDevice(xml, target, custom)


def _target(drive: dict, where: str, iface: str, used: set[str], need_target: bool) -> str:
    prefix, limit = _PREFIX[iface], _MAX_INDEX.get(iface, _LAST_INDEX)
    if "name" in drive:
        target = p.name(drive["name"], f"{where}.name", pattern=prefix + "[a-z]{1,2}")
    elif "index" in drive:
        what = f"an integer from 0 to {limit} for {iface}"
        target = disk_name(
            prefix, p.integer(drive["index"], f"{where}.index", minimum=0, maximum=limit, what=what)
        )
    elif need_target:
        raise InvalidVmParams(f"{where} needs 'index' or 'name' to choose its target dev")
    else:
        free = (disk_name(prefix, i) for i in range(limit + 1))
        target = next((t for t in free if t not in used), "")
        if not target:
            raise InvalidVmParams(f"{where}: no free target dev left on {iface}")
    if target in used:
        raise InvalidVmParams(f"{where}: target dev {target} is already used by another drive")
    used.add(target)
    return target


def nic_xml(nic: Any, where: str) -> BuiltDevice:
    """
    Build an ``<interface>`` from a legacy NIC dict.

    :raises InvalidVmParams: naming the bad key.
    """
    nic = p.mapping(nic, where)
    model = p.choice(
        nic.get("nicModel", "virtio"), f"{where}.nicModel", ("virtio", "e1000", "rtl8139")
    )
    mac = p.mac(nic["macAddr"], f"{where}.macAddr") if "macAddr" in nic else None
    if "network" in nic and "bridge" in nic:
        raise InvalidVmParams(f"{where} must have 'network' or 'bridge', not both")
    source, kind = "", "user"
    if "network" in nic:
        kind, name = "network", p.name(nic["network"], f"{where}.network")
        source = f"<source network='{name}'/>"
    elif "bridge" in nic:
        kind = "bridge"
        name = p.name(nic["bridge"], f"{where}.bridge", pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
        source = f"<source bridge='{name}'/>"
    custom = p.custom(nic.get("custom", {}), f"{where}.custom")
    if custom and mac is None:
        raise InvalidVmParams(f"{where}.custom needs {where}.macAddr to key it")
    mac_xml = f"<mac address='{mac}'/>" if mac else ""
    xml = f"<interface type='{kind}'>{mac_xml}{source}<model type='{model}'/></interface>"
    return BuiltDevice(xml, mac or "", custom)
