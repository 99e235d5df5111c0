"""Pure: a VM's definition, from the admin API's spec to a ``VmStatic``, and from a ``VmStatic``
to the agent's ``VM.create`` params.

The spec (``IEngine.add_vm``) uses the API's names: ``name``, ``memory_mib``, ``vcpus``,
``kernel``, ``initrd``, ``cmdline``, ``disks``, ``nics``, ``custom``, ``ha``, ``ha_priority``,
``pinned_host``. Disks and NICs are VDSM's legacy dictionaries (``schema/agent.yml``
``LegacyDrive`` and ``LegacyNic``), with two conveniences for NICs: ``mac`` for ``macAddr`` and
``model`` for ``nicModel``, and a MAC derived from the VM's id when none is given (in oVirt's
``56:6f`` range), so the same VM always gets the same MAC.

The agent's params are VDSM's legacy ``vmParams`` (``vmId``, ``vmName``, ``memSize``, ``smp``,
``kernel``, ``initrd``, ``kernelArgs``, ``drives``, ``nics``, ``custom``), which the agent turns
into domain XML with ``vdsmlike.vm.domxml.build_domain``.

Every refusal is :class:`~engine.store.errors.InvalidValue` naming the key and why.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from .store.errors import InvalidValue
from .store.rows import VmStatic

#: The spec keys ``add_vm`` and ``update_vm`` take, and the ``VmStatic`` field each sets.
SPEC_FIELDS: Mapping[str, str] = {
    "name": "name",
    "memory_mib": "mem_mib",
    "vcpus": "vcpus",
    "kernel": "kernel",
    "initrd": "initrd",
    "cmdline": "cmdline",
    "disks": "disks",
    "nics": "nics",
    "custom": "custom",
    "ha": "ha",
    "ha_priority": "ha_priority",
    "pinned_host": "pinned_host",
}

MAX_VCPUS = 240
MAX_MEMORY_MIB = 4 * 1024 * 1024

_DISK_KEYS = {
    "path": str, "format": str, "iface": str, "index": int, "name": str,
    "readonly": bool, "device": str, "custom": dict,
}
_DISK_CHOICES = {
    "format": ("raw", "qcow2"),
    "iface": ("virtio", "ide", "scsi", "sata"),
    "device": ("disk", "cdrom"),
}
_NIC_KEYS = {"macAddr": str, "network": str, "bridge": str, "nicModel": str, "custom": dict}
_NIC_ALIASES = {"mac": "macAddr", "model": "nicModel"}
_NIC_MODELS = ("virtio", "e1000", "rtl8139")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def vm_from_spec(spec: Mapping[str, Any], vm_id: UUID | None = None) -> VmStatic:
    """
    A new VM's definition.

    :param spec: the API's spec; ``name`` and ``memory_mib`` are required.
    :param vm_id: the id to give it; a fresh one by default.
    :raises InvalidValue: a missing or unknown key, or a bad value.
    """
    if not isinstance(spec, Mapping):
        raise InvalidValue(f"a VM spec must be an object, got {type(spec).__name__}")
    for key in ("name", "memory_mib"):
        if key not in spec:
            raise InvalidValue(f"{key} is required")
    vm_id = vm_id or uuid.uuid4()
    fields = changes_from_spec(spec, vm_id=vm_id)
    return VmStatic(id=vm_id, **fields)


def changes_from_spec(spec: Mapping[str, Any], *, vm_id: UUID) -> dict[str, Any]:
    """
    The ``VmStatic`` fields a spec (or a partial one, for ``update_vm``) sets.

    :param vm_id: the VM's id (MACs are derived from it).
    :raises InvalidValue: an unknown key or a bad value.
    """
    if not isinstance(spec, Mapping):
        raise InvalidValue(f"VM changes must be an object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        known = ", ".join(SPEC_FIELDS)
        raise InvalidValue(f"unknown VM field(s) {', '.join(unknown)} (known: {known})")
    return {SPEC_FIELDS[key]: _CHECKS[key](value, vm_id) for key, value in spec.items()}


def _name(value: Any, vm_id: UUID) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"name must be a non-empty string, got {value!r}")
    if len(value) > 200 or any(ord(c) < 32 for c in value):
        raise InvalidValue("name must be at most 200 printable characters")
    if "/" in value:
        # libvirt refuses '/' in a domain name: refuse it here rather than at start.
        raise InvalidValue(f"name must not contain '/', got {value!r}")
    return value.strip()


def _integer(key: str, low: int, high: int) -> Any:
    def check(value: Any, vm_id: UUID) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidValue(f"{key} must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def _optional_text(key: str) -> Any:
    def check(value: Any, vm_id: UUID) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise InvalidValue(f"{key} must be a string, got {type(value).__name__}")
        return value

    return check


def _boolean(value: Any, vm_id: UUID) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(f"ha must be true or false, got {value!r}")
    return value


def _host_ref(value: Any, vm_id: UUID) -> UUID | None:
    if value is None or isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidValue(f"pinned_host must be a host id, got {value!r}") from None


def _custom(value: Any, vm_id: UUID, key: str = "custom") -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidValue(f"{key} must be an object of strings, got {type(value).__name__}")
    out = {}
    for name, item in value.items():
        if not isinstance(item, str | int | float | bool) or item is None:
            raise InvalidValue(f"{key}.{name} must be a string or a number, got {item!r}")
        out[str(name)] = str(item).lower() if isinstance(item, bool) else str(item)
    return out


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidValue(f"{where}.{key} must be a non-negative integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise InvalidValue(f"{where}.{key} must be a {kind.__name__}, got {value!r}")
    return value


def _disk(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidValue(f"{where} must be an object, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _DISK_KEYS:
            raise InvalidValue(f"{where}: unknown key {key!r} (known: {', '.join(_DISK_KEYS)})")
        if key == "custom":
            out[key] = _custom(item, uuid.UUID(int=0), f"{where}.custom")
            continue
        out[key] = _typed(where, key, item, _DISK_KEYS[key])
        if key in _DISK_CHOICES and item not in _DISK_CHOICES[key]:
            raise InvalidValue(f"{where}.{key} must be one of {', '.join(_DISK_CHOICES[key])}")
    if not out.get("path") and out.get("device") != "cdrom":
        raise InvalidValue(f"{where}.path is required (only a cdrom may be empty)")
    return out


def _disks(value: Any, vm_id: UUID) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidValue(f"disks must be a list, got {type(value).__name__}")
    return [_disk(item, f"disks[{i}]") for i, item in enumerate(value)]


def _nic(value: Any, where: str, vm_id: UUID, index: int) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidValue(f"{where} must be an object, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        key = _NIC_ALIASES.get(key, key)
        if key not in _NIC_KEYS:
            known = ", ".join([*_NIC_KEYS, *_NIC_ALIASES])
            raise InvalidValue(f"{where}: unknown key {key!r} (known: {known})")
        if key == "custom":
            out[key] = _custom(item, vm_id, f"{where}.custom")
        else:
            out[key] = _typed(where, key, item, _NIC_KEYS[key])
    mac = out.setdefault("macAddr", derived_mac(vm_id, index))
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidValue(f"{where}.macAddr must be a unicast MAC address, got {mac!r}")
    if "network" in out and "bridge" in out:
        raise InvalidValue(f"{where}: give network or bridge, not both")
    if out.get("nicModel", "virtio") not in _NIC_MODELS:
        raise InvalidValue(f"{where}.nicModel must be one of {', '.join(_NIC_MODELS)}")
    return out


def _nics(value: Any, vm_id: UUID) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidValue(f"nics must be a list, got {type(value).__name__}")
    return [_nic(item, f"nics[{i}]", vm_id, i) for i, item in enumerate(value)]


def derived_mac(vm_id: UUID, index: int) -> str:
    """:returns: a stable unicast MAC for NIC ``index`` of the VM, in oVirt's ``56:6f`` range."""
    digest = hashlib.sha256(f"{vm_id}/{index}".encode()).digest()
    return "56:6f:" + ":".join(f"{b:02x}" for b in digest[:4])


_CHECKS: Mapping[str, Any] = {
    "name": _name,
    "memory_mib": _integer("memory_mib", 1, MAX_MEMORY_MIB),
    "vcpus": _integer("vcpus", 1, MAX_VCPUS),
    "kernel": _optional_text("kernel"),
    "initrd": _optional_text("initrd"),
    "cmdline": _optional_text("cmdline"),
    "disks": _disks,
    "nics": _nics,
    "custom": _custom,
    "ha": _boolean,
    "ha_priority": _integer("ha_priority", 0, 100),
    "pinned_host": _host_ref,
}


def create_params(vm: VmStatic) -> dict[str, Any]:
    """
    The agent's ``VM.create`` ``vmParams`` for a VM (VDSM's legacy dictionary).

    :param vm: the definition; its disks and NICs as :func:`vm_from_spec` checked them.
    :returns: ``vmId``, ``vmName``, ``memSize``, ``smp`` and whichever of ``kernel``,
        ``initrd``, ``kernelArgs``, ``drives``, ``nics``, ``custom`` the VM has.
    """
    params: dict[str, Any] = {
        "vmId": str(vm.id),
        "vmName": vm.name,
        "memSize": vm.mem_mib,
        "smp": vm.vcpus,
    }
    for key, value in (("kernel", vm.kernel), ("initrd", vm.initrd), ("kernelArgs", vm.cmdline)):
        if value:
            params[key] = value
    if vm.disks:
        params["drives"] = [dict(d) for d in vm.disks]
    if vm.nics:
        params["nics"] = [
            {"macAddr": derived_mac(vm.id, i), **dict(n)} for i, n in enumerate(vm.nics)
        ]
    if vm.custom:
        params["custom"] = {str(k): str(v) for k, v in vm.custom.items()}
    return params
