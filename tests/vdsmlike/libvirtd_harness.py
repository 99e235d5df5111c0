"""Real libvirt hosts on one machine for live-migration tests: session-mode ``libvirtd``
daemons, each with its own host UUID, directories and migration ports, all run as one
unprivileged user (the recipe in ``../shared/DESIGN.md``).

Why a user of its own: a root ``libvirtd`` always uses the system paths, so two of them cannot
coexist; session daemons can, and peer-to-peer migration between them works when they run as
the *same* user. From root the daemons are started with ``setpriv`` as :data:`USER` (created
with ``useradd -r`` when missing); as any other user they simply run as that user. Guests then
run as that user too: their kernel, initrd and serial files must be reachable by it
(:func:`share_dir`).

Paths are short (``/tmp/vlm-XXXX/a/...``): libvirt's unix sockets must stay under 108 bytes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from vdsmlike.libvirtd import destroy_domains

#: The unprivileged user the daemons (and their guests) run as when the tests run as root.
USER = "vlmig"

#: Each host's migration port range (``qemu.conf``), so two hosts never fight over a port.
PORTS = {0: (49152, 49167), 1: (49170, 49185), 2: (49188, 49203)}


class Unavailable(Exception):
    """What the harness needs is missing here; the message says what (tests skip with it)."""


def libvirtd_path() -> str:
    """:returns: the ``libvirtd`` binary. :raises Unavailable: if it is not installed."""
    path = shutil.which("libvirtd") or shutil.which("libvirtd", path="/usr/sbin:/sbin")
    if path is None:
        raise Unavailable("libvirtd is not installed (Debian package libvirt-daemon)")
    return path


def ensure_user() -> tuple[int, int] | None:
    """
    The uid and gid the daemons run as: :data:`USER`'s, created if missing (root only), or
    None to run them as the current user.

    :raises Unavailable: if the user cannot be created or ``setpriv`` is missing.
    """
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        raise Unavailable("setpriv (util-linux) is needed to run libvirtd as another user")
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        done = subprocess.run(
            ["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 9):  # 9: created meanwhile by a concurrent run
            raise Unavailable(f"cannot create user {USER}: {done.stderr.strip()}") from None
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


def share_dir(path: Path, owner: tuple[int, int] | None, *, mode: int = 0o755) -> None:
    """Make ``path`` usable by the daemons' user: owned by it (when set) and ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(path, *owner)
    path.chmod(mode)


@dataclass
class SessionDaemon:
    """
    One session ``libvirtd``: a simulated host with its own host UUID and directories.

    :ivar home: its ``$HOME``; ``uri`` the URI to reach it (also from the other daemons).
    """

    home: Path
    index: int
    owner: tuple[int, int] | None
    process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        """The daemon's read-write unix socket."""
        return self.home / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """``qemu+unix:///session?socket=...``."""
        return f"qemu+unix:///session?socket={self.socket}"

    @property
    def log_path(self) -> Path:
        """Where the daemon's stderr goes."""
        return self.home.parent / f"libvirtd-{self.home.name}.log"

    def configure(self) -> None:
        """Write ``libvirtd.conf`` (a fresh host UUID) and ``qemu.conf`` (file logs, ports)."""
        config = self.home / "cfg" / "libvirt"
        config.mkdir(parents=True, exist_ok=True)
        (config / "libvirtd.conf").write_text(f'host_uuid = "{uuid.uuid4()}"\n')
        low, high = PORTS[self.index]
        (config / "qemu.conf").write_text(
            f'stdio_handler = "file"\nmigration_port_min = {low}\nmigration_port_max = {high}\n'
        )
        for name in ("run", "cache", "data"):
            (self.home / name).mkdir(exist_ok=True)
        (self.home / "run").chmod(0o700)
        if self.owner is not None:
            for path in [self.home, *self.home.rglob("*")]:
                os.chown(path, *self.owner)

    def start(self, binary: str) -> None:
        """Start the daemon (returns at once; :meth:`wait_ready` waits for its socket)."""
        home = str(self.home)
        env = [
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            f"HOME={home}",
            f"XDG_CONFIG_HOME={home}/cfg",
            f"XDG_RUNTIME_DIR={home}/run",
            f"XDG_CACHE_HOME={home}/cache",
            f"XDG_DATA_HOME={home}/data",
            binary,
        ]
        if self.owner is not None:
            uid, gid = self.owner
            env = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", *env]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """:raises Unavailable: if the socket does not appear (the log's tail says why)."""
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise Unavailable(f"libvirtd did not start: {tail}")
            time.sleep(0.05)

    def destroy_domains(self) -> None:
        """Destroy every domain the daemon runs (guests outlive their daemon otherwise)."""
        destroy_domains(self.uri)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL after ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Hosts:
    """
    Several session daemons under one short temporary directory.

    Use as ``hosts = Hosts.start(2)`` ... ``hosts.stop()``.

    :ivar root: the temporary directory (removed by :meth:`stop`).
    :ivar owner: the daemons' uid and gid, or None (the current user).
    """

    def __init__(self, root: Path, daemons: list[SessionDaemon], owner: tuple[int, int] | None):
        self.root = root
        self.daemons = daemons
        self.owner = owner

    @classmethod
    def start(cls, count: int = 2) -> Hosts:
        """
        Start ``count`` daemons and wait for their sockets.

        :raises Unavailable: when libvirtd, setpriv or the user are not to be had.
        """
        binary = libvirtd_path()
        owner = ensure_user()
        root = Path(tempfile.mkdtemp(prefix="vlm-", dir="/tmp"))
        root.chmod(0o755)
        daemons = [SessionDaemon(root / chr(ord("a") + i), i, owner) for i in range(count)]
        hosts = cls(root, daemons, owner)
        try:
            for daemon in daemons:
                daemon.home.mkdir()
                daemon.configure()
                daemon.start(binary)
            for daemon in daemons:
                daemon.wait_ready()
        except BaseException:
            hosts.stop()
            raise
        return hosts

    def shared(self, *parts: str) -> Path:
        """A directory under the root the daemons' guests can write to (sticky, 1777)."""
        path = self.root.joinpath(*parts)
        for parent in reversed(path.relative_to(self.root).parents):
            if str(parent) != ".":
                share_dir(self.root / parent, None)
        share_dir(path, None, mode=0o1777)
        return path

    def stop(self) -> None:
        """Destroy the guests, stop the daemons, kill any QEMU left, remove the directory."""
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.destroy_domains()
            daemon.stop()
        for pid in _leftover_qemus(self.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _leftover_qemus(root: Path) -> list[int]:
    """PIDs of processes whose command line names ``root`` (guests of our daemons)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline and b"qemu" in cmdline:
            found.append(int(entry.name))
    return found
