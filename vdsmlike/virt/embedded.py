"""Preparing a root directory for libvirt's embedded QEMU driver (``qemu:///embed?root=DIR``).

The embedded driver needs no daemon, which makes a one-machine setup trivial; it still reads
``<root>/etc/qemu.conf``. We write one when missing: QEMU's output to files (no virtlogd), and,
when the agent runs as root, QEMU as root too, because a private state dir is not readable by
the ``libvirt-qemu`` user. Production hosts should prefer ``qemu:///system``.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlparse

QEMU_CONF = """\
# Written by vdsmlike for the embedded QEMU driver; edit freely, it is not overwritten.
stdio_handler = "file"
{identity}"""


def embedded_root(uri: str) -> str | None:
    """The ``root`` of a ``qemu:///embed`` URI, or None for any other URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "qemu" or parsed.path != "/embed":
        return None
    roots = parse_qs(parsed.query).get("root")
    return roots[0] if roots else None


def prepare_embedded_root(root: str, *, as_root: bool | None = None) -> None:
    """Create ``root`` and its ``etc/qemu.conf`` unless they exist (BLOCKING, small)."""
    if as_root is None:
        as_root = os.geteuid() == 0
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    conf = os.path.join(etc, "qemu.conf")
    if os.path.exists(conf):
        return
    identity = 'user = "root"\ngroup = "root"\n' if as_root else ""
    with open(conf, "w", encoding="utf-8") as f:
        f.write(QEMU_CONF.format(identity=identity))
