"""Shared fixtures: the real test guest image and one embedded libvirt root per test session.

Tests that need QEMU ask for ``guest_image`` and ``embedded_root``; both skip with a reason when
QEMU or the image build is unavailable, and fail instead when ``CI=true``. Two embedded roots
cannot live in one process, so every QEMU test in a session shares ``embedded_root``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vdsmlike.agentproc import kill_guests_under

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:  # for "import guests" and "from contracts import ..."
    sys.path.insert(0, str(TESTS))


def unavailable(reason: str) -> None:
    """Skip the test for ``reason``, or fail it under CI, where everything must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The directory holding the test guest's ``vmlinuz`` and ``initrd.img`` (built once)."""
    if shutil.which("qemu-system-x86_64") is None:
        unavailable("qemu-system-x86_64 is not installed")
    build = REPO / "contrib" / "guest-image" / "build.sh"
    try:
        done = subprocess.run(
            [str(build)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"cannot build the guest image: {e}")
    if done.returncode != 0:
        unavailable(f"guest image build failed: {done.stderr.strip()[-2000:]}")
    image = Path(done.stdout.strip().splitlines()[-1])
    for name in ("vmlinuz", "initrd.img"):
        if not (image / name).is_file():
            unavailable(f"guest image build produced no {image / name}")
    return image


@pytest.fixture(scope="session")
def embedded_root() -> Iterator[Path]:
    """A fresh root for ``qemu:///embed?root=...``; QEMU runs as root, logs go to files."""
    # Short: libvirt puts unix sockets under it, and their paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="vl-emb-", dir="/tmp"))
    (root / "etc").mkdir()
    (root / "etc" / "qemu.conf").write_text(
        'stdio_handler = "file"\nuser = "root"\ngroup = "root"\n'
    )
    yield root
    kill_guests_under(str(root))
    shutil.rmtree(root, ignore_errors=True)
