"""Domain XML for tests: a tiny real guest (the image from contrib/guest-image) and a bare one.

The real guest boots Debian's cloud kernel with the busybox initramfs under TCG
(``<domain type='qemu'>``): its serial console goes to a file, where it prints
:data:`READY_MARKER` and then ``tick N`` once a second.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from pathlib import Path

READY_MARKER = "VDSMLIKE-GUEST-READY"


def guest_xml(
    image_dir: Path | str,
    serial_path: Path | str,
    *,
    name: str | None = None,
    vm_id: str | None = None,
    memory_mib: int = 192,
    domain_type: str = "qemu",
) -> str:
    """:returns: XML for the real test guest, its serial console logged to ``serial_path``."""
    vm_id = vm_id or str(uuidlib.uuid4())
    name = name or f"vl-test-{vm_id[:8]}"
    image = Path(image_dir)
    return f"""<domain type='{domain_type}'>
  <name>{name}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image / "vmlinuz"}</kernel>
    <initrd>{image / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='{serial_path}'/>
      <target port='0'/>
    </serial>
    <memballoon model='virtio'>
      <stats period='2'/>
    </memballoon>
  </devices>
</domain>
"""


def bare_xml(*, name: str | None = None, vm_id: str | None = None, memory_mib: int = 128) -> str:
    """:returns: minimal domain XML (type 'kvm') for the memory and test-driver hypervisors."""
    vm_id = vm_id or str(uuidlib.uuid4())
    name = name or f"vl-test-{vm_id[:8]}"
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><memballoon model='virtio'><stats period='2'/></memballoon></devices>
</domain>
"""


def serial_text(serial_path: Path | str) -> str:
    """:returns: what the guest wrote to its serial console so far ('' before it starts)."""
    try:
        return Path(serial_path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def last_tick(serial_path: Path | str) -> int | None:
    """:returns: the last ``tick N`` counter the guest printed, or None."""
    ticks = [
        int(line.split()[1])
        for line in serial_text(serial_path).splitlines()
        if line.startswith("tick ") and line.split()[1:2] and line.split()[1].isdigit()
    ]
    return ticks[-1] if ticks else None


def monotonic() -> float:
    """The clock tests measure boot times with."""
    return time.monotonic()
