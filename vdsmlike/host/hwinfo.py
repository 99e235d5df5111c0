"""The host's hardware identity (``Host.getHardwareInfo``) from the kernel's DMI files.

:func:`read_hardware_info` reads a handful of small files under ``/sys/class/dmi/id``; it
blocks, so callers run it on a worker thread.
"""

from __future__ import annotations

import os

#: ``Host.getHardwareInfo`` field → DMI file name.
DMI_FIELDS = {
    "systemManufacturer": "sys_vendor",
    "systemProductName": "product_name",
    "systemVersion": "product_version",
    "systemSerialNumber": "product_serial",
    "systemUUID": "product_uuid",
    "systemFamily": "product_family",
}


class HardwareInfoUnavailable(OSError):
    """The host exposes no DMI information (no ``/sys/class/dmi/id``); VDSM's error 57."""


def read_hardware_info(dmi_dir: str = "/sys/class/dmi/id") -> dict[str, str]:
    """
    Read the host's DMI identity. BLOCKING: run it on a worker thread.

    :param dmi_dir: the DMI directory.
    :returns: the six ``HardwareInfo`` fields; a file that is absent or unreadable (serial
        and UUID need root) gives ``""``.
    :raises HardwareInfoUnavailable: if ``dmi_dir`` does not exist or is not a directory.
    """
    if not os.path.isdir(dmi_dir):
        raise HardwareInfoUnavailable(f"no DMI information: {dmi_dir} is not a directory")
    return {key: _read_field(os.path.join(dmi_dir, name)) for key, name in DMI_FIELDS.items()}


def _read_field(path: str) -> str:
    """One DMI file's value without surrounding blanks, ``""`` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError:
        return ""
    return raw.decode("utf-8", "replace").replace("\x00", "").strip()
