"""Hardware information: DMI files read into Host.getHardwareInfo's six fields."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vdsmlike.api.schema import Schema
from vdsmlike.host.hwinfo import HardwareInfoUnavailable, read_hardware_info

REAL_DMI = "/sys/class/dmi/id"


def test_reads_every_field_from_dmi_files(tmp_path: Path):
    """Each field comes from its DMI file, trailing newline and padding removed."""
    files = {
        "sys_vendor": "Acme Corp\n", "product_name": "Rack 9000 \n", "product_version": "1.2\n",
        "product_serial": "SN-42\n", "product_uuid": "4c4c4544-0042-3010-8051-b3c04f4a5931\n",
        "product_family": "Servers\n",
    }  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert read_hardware_info(str(tmp_path)) == {
        "systemManufacturer": "Acme Corp", "systemProductName": "Rack 9000",
        "systemVersion": "1.2", "systemSerialNumber": "SN-42",
        "systemUUID": "4c4c4544-0042-3010-8051-b3c04f4a5931", "systemFamily": "Servers",
    }  # fmt: skip


def test_missing_or_unreadable_files_give_empty_strings(tmp_path: Path):
    """Absent files and unreadable entries (here a directory) give empty strings."""
    (tmp_path / "sys_vendor").write_bytes(b"Vendor\xff\x00\n")
    (tmp_path / "product_serial").mkdir()
    info = read_hardware_info(str(tmp_path))
    assert info["systemManufacturer"] == "Vendor\ufffd"
    assert info["systemSerialNumber"] == "" and info["systemUUID"] == ""
    assert len(info) == 6


def test_missing_dmi_directory_raises_a_clear_error(tmp_path: Path):
    """A host without a DMI directory raises HardwareInfoUnavailable, an OSError, naming it."""
    missing = tmp_path / "no-dmi"
    with pytest.raises(HardwareInfoUnavailable, match="no-dmi") as caught:
        read_hardware_info(str(missing))
    assert isinstance(caught.value, OSError)


def test_this_machine_answers_with_dmi_data_or_the_clear_error():
    """On this machine: schema-valid DMI data where /sys has it, else HardwareInfoUnavailable."""
    if os.path.isdir(REAL_DMI):
        Schema.load().check_result("Host.getHardwareInfo", read_hardware_info())
    else:
        with pytest.raises(HardwareInfoUnavailable, match="dmi"):
            read_hardware_info()
