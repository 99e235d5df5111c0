"""
The agent's per-VM state kept in the domain's ``<metadata>``, so a restarted agent recovers it.

Pure: no I/O. Our element, in namespace :data:`METADATA_NS` (prefix ``vdsmlike``)::

    <vdsmlike:vm xmlns:vdsmlike="urn:vdsmlike:vm:1">
      <vdsmlike:startTime>1700000000.25</vdsmlike:startTime>      epoch seconds (float)
      <vdsmlike:pauseTime>1700000100.5</vdsmlike:pauseTime>       epoch seconds (float)
      <vdsmlike:balloonTarget>524288</vdsmlike:balloonTarget>     KiB (int)
      <vdsmlike:ballooningEnabled>true</vdsmlike:ballooningEnabled>
      <vdsmlike:launchPaused>false</vdsmlike:launchPaused>
      <vdsmlike:destroyOnReboot>false</vdsmlike:destroyOnReboot>
      <vdsmlike:custom>
        <vdsmlike:prop name="sap_agent">true</vdsmlike:prop>
      </vdsmlike:custom>
      <vdsmlike:device key="vda">                                target dev, MAC or alias
        <vdsmlike:prop name="cache">none</vdsmlike:prop>
      </vdsmlike:device>
    </vdsmlike:vm>

In domain XML it sits in ``<metadata>`` as above (:func:`namespaced_element`,
:func:`with_metadata`). ``virDomainSetMetadata`` takes it, and ``virDomainGetMetadata`` returns
it, as the same element without prefixes or namespace (``<vm><startTime>...``), which is what
:func:`metadata_element` makes; :func:`parse_metadata` reads all three forms.

Every child is optional; an absent one takes the :class:`VmMetadata` default. Times are written
with ``repr(float)``, so they read back exactly. Property names are attributes rather than element
names, so any string survives; we still insist on environment variable names, because hook
scripts receive custom properties as environment variables.

For engines that send VDSM-style XML we also read VDSM's ``<ovirt-vm:vm>`` (namespace
:data:`OVIRT_VM_NS`): ``startTime``, ``pauseTime``, ``balloonTarget``, ``ballooningEnabled``,
``launchPaused``, ``destroy_on_reboot``, ``custom`` (one child element per property, named for
it) and ``device`` elements (keyed by ``mac_address``, ``name`` or ``alias``) with their own
``custom``. When both are present ours wins; we never write ``ovirt-vm``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from ..virt.events import METADATA_NS, METADATA_PREFIX
from .xmlsafe import (
    ElementSpan,
    InvalidDomainXml,
    element_spans,
    encode,
    escape_attr,
    escape_text,
    parse_xml,
    splice,
    tag_name,
)

#: VDSM's metadata namespace, read for compatibility.
OVIRT_VM_NS = "http://ovirt.org/vm/1.0"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OURS = f"{{{METADATA_NS}}}"
_OVIRT = f"{{{OVIRT_VM_NS}}}"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
#: Reads the custom properties under an element, given the namespace (``{uri}`` or empty).
_PropReader = Callable[[ET.Element, str], dict[str, str]]


@dataclass(frozen=True)
class VmMetadata:
    """
    Agent state of one VM that must survive an agent restart.

    :ivar start_time: when the agent started the VM, epoch seconds.
    :ivar pause_time: when the VM was paused, epoch seconds; ``None`` when not paused.
    :ivar balloon_target: the last balloon target set, KiB.
    :ivar ballooning_enabled: whether balloon targets are applied at all.
    :ivar launch_paused: the VM was created to start paused.
    :ivar destroy_on_reboot: a guest reboot ends the VM (``VM.setDestroyOnReboot``).
    :ivar custom: the VM's custom properties.
    :ivar device_custom: custom properties per device, keyed by target dev, MAC or alias.
    """

    start_time: float | None = None
    pause_time: float | None = None
    balloon_target: int | None = None
    ballooning_enabled: bool = True
    launch_paused: bool = False
    destroy_on_reboot: bool = False
    custom: dict[str, str] = field(default_factory=dict)
    device_custom: dict[str, dict[str, str]] = field(default_factory=dict)


def is_env_name(name: str) -> bool:
    """:returns: whether ``name`` can be an environment variable name (hooks need that)."""
    return bool(_ENV_NAME.match(name))


# -- reading ---------------------------------------------------------------------------------


def agent_element(root: ET.Element) -> ET.Element | None:
    """:returns: our ``<vdsmlike:vm>`` or else VDSM's ``<ovirt-vm:vm>`` of a parsed domain."""
    metadata = root.find("metadata")
    if metadata is None:
        return None
    ours = metadata.find(f"{_OURS}vm")
    return ours if ours is not None else metadata.find(f"{_OVIRT}vm")


def metadata_from_tree(root: ET.Element) -> VmMetadata:
    """
    :param root: a parsed ``<domain>``, or a bare ``<vdsmlike:vm>`` / ``<ovirt-vm:vm>``, or our
        ``<vm>`` without namespace as ``virDomainGetMetadata`` returns it.
    :returns: the metadata it carries, defaults for whatever is absent.
    :raises InvalidDomainXml: for a value that does not parse.
    """
    if root.tag == "vm":
        return _read(root, "", "destroyOnReboot", _props)
    if root.tag in (f"{_OURS}vm", f"{_OVIRT}vm"):
        element: ET.Element | None = root
    else:
        element = agent_element(root)
    if element is None:
        return VmMetadata()
    if element.tag.startswith(_OURS):
        return _read(element, _OURS, "destroyOnReboot", _props)
    return _read(element, _OVIRT, "destroy_on_reboot", _ovirt_props)


def parse_metadata(xml: str) -> VmMetadata:
    """
    Read the agent metadata of a domain.

    :param xml: a whole domain XML, or just our element (with or without its namespace, as
        :func:`metadata_element` writes it and ``virDomainGetMetadata`` returns it).
    :returns: the metadata, defaults for whatever is absent.
    :raises InvalidDomainXml: for hostile or malformed XML, or a value that does not parse.
    """
    return metadata_from_tree(parse_xml(xml))


def has_agent_metadata(xml: str) -> bool:
    """
    :returns: whether the domain carries our metadata or VDSM's, i.e. an agent created it.
    :raises InvalidDomainXml: for hostile or malformed XML.
    """
    return agent_element(parse_xml(xml)) is not None


def _read(element: ET.Element, ns: str, destroy_tag: str, props: _PropReader) -> VmMetadata:
    def text(tag: str) -> str | None:
        child = element.find(ns + tag)
        return None if child is None else (child.text or "").strip()

    custom = element.find(f"{ns}custom")
    return VmMetadata(
        start_time=_float(text("startTime"), "startTime"),
        pause_time=_float(text("pauseTime"), "pauseTime"),
        balloon_target=_int(text("balloonTarget"), "balloonTarget"),
        ballooning_enabled=_bool(text("ballooningEnabled"), "ballooningEnabled", True),
        launch_paused=_bool(text("launchPaused"), "launchPaused", False),
        destroy_on_reboot=_bool(text(destroy_tag), destroy_tag, False),
        custom={} if custom is None else props(custom, ns),
        device_custom=_devices(element, ns, props),
    )


def _props(element: ET.Element, ns: str) -> dict[str, str]:
    found = {}
    for prop in element.findall(f"{ns}prop"):
        name = prop.get("name")
        if name is None:
            raise InvalidDomainXml("<prop> in our metadata needs a name attribute")
        found[_env_name(name)] = prop.text or ""
    return found


def _ovirt_props(element: ET.Element, ns: str) -> dict[str, str]:
    return {
        _env_name(child.tag.split("}")[-1]): (child.text or "").strip()
        for child in element
        if isinstance(child.tag, str)
    }


def _devices(element: ET.Element, ns: str, props: _PropReader) -> dict[str, dict[str, str]]:
    found = {}
    for device in element.findall(f"{ns}device"):
        key = device.get("key") or device.get("mac_address") or device.get("name")
        key = key or device.get("alias")
        custom = device if ns != _OVIRT else device.find(f"{ns}custom")
        if key and custom is not None:
            found[key.lower()] = props(custom, ns)
    return found


def _env_name(name: str) -> str:
    if not is_env_name(name):
        raise InvalidDomainXml(
            f"custom property name {name!r} is not a valid environment variable name"
        )
    return name


def _float(value: str | None, tag: str) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidDomainXml(f"<{tag}> must be a number, got {value!r}")
    return number


def _int(value: str | None, tag: str) -> int | None:
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise InvalidDomainXml(f"<{tag}> must be a non-negative integer, got {value!r}")
    return int(value)


def _bool(value: str | None, tag: str, default: bool) -> bool:
    if not value:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidDomainXml(f"<{tag}> must be true or false, got {value!r}")


# -- writing ---------------------------------------------------------------------------------


def metadata_element(md: VmMetadata) -> str:
    """
    :returns: our element alone, in the form ``virDomainSetMetadata`` wants for key
        :data:`METADATA_PREFIX` and URI :data:`METADATA_NS`: ``<vm>...</vm>`` *without* a
        namespace (libvirt puts it into the namespace; it refuses an element that already
        declares the prefix, and ``virDomainGetMetadata`` hands it back in this form).
    """
    return _element(md, "")


def namespaced_element(md: VmMetadata) -> str:
    """:returns: our ``<vdsmlike:vm xmlns:vdsmlike=...>`` element, as it sits in domain XML."""
    return _element(md, METADATA_PREFIX)


def _element(md: VmMetadata, prefix: str) -> str:
    p = f"{prefix}:" if prefix else ""
    declaration = f' xmlns:{prefix}="{METADATA_NS}"' if prefix else ""
    parts = [f"<{p}vm{declaration}>"]
    for tag, value in (
        ("startTime", md.start_time),
        ("pauseTime", md.pause_time),
        ("balloonTarget", md.balloon_target),
    ):
        if value is not None:
            parts.append(f"<{p}{tag}>{value!r}</{p}{tag}>")
    for tag, flag in (
        ("ballooningEnabled", md.ballooning_enabled),
        ("launchPaused", md.launch_paused),
        ("destroyOnReboot", md.destroy_on_reboot),
    ):
        parts.append(f"<{p}{tag}>{'true' if flag else 'false'}</{p}{tag}>")
    if md.custom:
        parts.append(f"<{p}custom>{_prop_elements(md.custom, p)}</{p}custom>")
    for key, props in sorted(md.device_custom.items()):
        parts.append(f'<{p}device key="{escape_attr(key)}">{_prop_elements(props, p)}</{p}device>')
    parts.append(f"</{p}vm>")
    return "".join(parts)


def _prop_elements(props: dict[str, str], p: str) -> str:
    return "".join(
        f'<{p}prop name="{escape_attr(name)}">{escape_text(value)}</{p}prop>'
        for name, value in sorted(props.items())
    )


def with_metadata(xml: str, md: VmMetadata) -> str:
    """
    Put our metadata element into a domain XML, leaving every other byte as it was.

    An existing ``<vdsmlike:vm>`` is replaced; ``<metadata>`` is created (at the end of
    ``<domain>``) when absent; other namespaces' metadata, ``<ovirt-vm:vm>`` included, stay.

    :returns: the new domain XML.
    :raises InvalidDomainXml: for hostile or malformed XML, or a root other than ``<domain>``.
    """
    root = parse_xml(xml)
    if root.tag != "domain":
        raise InvalidDomainXml(f"root element must be <domain>, got <{root.tag}>")
    data = encode(xml)
    spans = element_spans(data, max_depth=3)
    ours = [s for s in spans if s.path[1:] == ("metadata", f"{METADATA_NS} vm")]
    element = namespaced_element(md).encode("utf-8")
    if ours:
        edits = [(ours[0].start, ours[0].end, element)]
        edits += [(s.start, s.end, b"") for s in ours[1:]]
        return splice(data, edits).decode("utf-8")
    metadata = [s for s in spans if s.path[1:] == ("metadata",)]
    if metadata:
        return _append_child(data, metadata[0], element).decode("utf-8")
    domain = next(s for s in spans if len(s.path) == 1)
    return _append_child(data, domain, b"<metadata>" + element + b"</metadata>").decode("utf-8")


def _append_child(data: bytes, span: ElementSpan, child: bytes) -> bytes:
    if span.end_tag is not None:
        return splice(data, [(span.end_tag, span.end_tag, child)])
    name = tag_name(data, span).encode("utf-8")
    opened = data[span.start : span.tag_end - 2].rstrip() + b">"
    return splice(data, [(span.start, span.end, opened + child + b"</" + name + b">")])
