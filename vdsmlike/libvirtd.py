"""A session-mode ``libvirtd`` run as an unprivileged user: one real libvirt "host" on this machine.

DESIGN.md's recipe ("Real live migration between two hosts on one machine"): a root
``libvirtd`` always uses the system paths, so each test host gets a session daemon of its own,
run as one unprivileged system user (``setpriv --reuid --regid --init-groups`` when started
from root), with its XDG directories under a short private directory ``base``:

- ``base/cfg/libvirt/libvirtd.conf``: a fresh ``host_uuid`` (libvirt refuses a migration
  between daemons with the same one);
- ``base/cfg/libvirt/qemu.conf``: ``stdio_handler = "file"`` and, optionally, a migration port
  range of its own;
- ``base/run`` (mode 0700) holds the socket; the URI is
  ``qemu+unix:///session?socket=<base>/run/libvirt/libvirt-sock``.

Daemons of one user can migrate peer to peer; daemons of different users cannot (the socket
is the user's). Used by :mod:`vdsmlike.testhost` and by test fixtures.

:func:`config_files`, :func:`session_env`, :func:`session_uri` are pure. :func:`ensure_user`
and :class:`SessionLibvirtd` do blocking I/O (files, ``useradd``, a child process): call them
from a launcher or a fixture, never from a reactor thread.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO

#: The unprivileged user the session daemons of our test hosts run as, unless told otherwise.
DEFAULT_USER = "vlmig"
#: Where a session daemon's socket is, under ``base``.
SOCKET = "run/libvirt/libvirt-sock"
#: A unix socket path must fit ``sun_path`` (108 bytes, NUL included).
MAX_SOCKET_PATH = 107


class LibvirtdError(RuntimeError):
    """The daemon cannot be prepared or did not start; the message says why."""


# -- pure ------------------------------------------------------------------------------------


def config_files(
    *, host_uuid: str, migration_ports: tuple[int, int] | None = None
) -> dict[str, str]:
    """
    The daemon's configuration files, by path relative to ``base``.

    :param host_uuid: the daemon's host UUID; it must differ between hosts.
    :param migration_ports: ``(min, max)`` of the ports QEMU receives migrations on.
    """
    qemu = ['stdio_handler = "file"']
    if migration_ports is not None:
        low, high = migration_ports
        qemu += [f"migration_port_min = {low}", f"migration_port_max = {high}"]
    return {
        "cfg/libvirt/libvirtd.conf": f'host_uuid = "{host_uuid}"\n',
        "cfg/libvirt/qemu.conf": "\n".join(qemu) + "\n",
    }


def session_env(base: Path | str) -> dict[str, str]:
    """The whole environment of a session daemon living in ``base`` (nothing inherited)."""
    root = str(base)
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": root,
        "XDG_CONFIG_HOME": f"{root}/cfg",
        "XDG_RUNTIME_DIR": f"{root}/run",
        "XDG_CACHE_HOME": f"{root}/cache",
        "XDG_DATA_HOME": f"{root}/data",
    }


def session_uri(base: Path | str) -> str:
    """The libvirt URI of the session daemon living in ``base``."""
    return f"qemu+unix:///session?socket={base}/{SOCKET}"


def check_base(base: Path | str) -> None:
    """:raises LibvirtdError: when the socket path under ``base`` would be too long."""
    path = f"{base}/{SOCKET}"
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise LibvirtdError(
            f"{path} is {len(path.encode())} bytes, over the {MAX_SOCKET_PATH} a unix socket "
            "path may have: use a shorter directory (e.g. under /tmp)"
        )


# -- I/O -------------------------------------------------------------------------------------


def ensure_user(name: str = DEFAULT_USER) -> tuple[int, int]:
    """
    Find the system user ``name``, creating it (``useradd -r``) when missing and we are root.

    :returns: its ``(uid, gid)``.
    :raises LibvirtdError: when it is missing and cannot be created.
    """
    try:
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise LibvirtdError(f"user {name!r} does not exist and only root can create it")
    done = subprocess.run(
        ["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:  # another process may have created it meanwhile: that is fine too
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LibvirtdError(f"cannot create user {name!r}: {done.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(path, uid, gid)


def destroy_domains(uri: str) -> None:
    """Destroy every running domain of the daemon at ``uri`` (BLOCKING): guests outlive their
    daemon otherwise. A daemon that does not answer is left alone."""
    import libvirt

    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass  # gone meanwhile
    finally:
        conn.close()


class SessionLibvirtd:
    """
    One session ``libvirtd`` living in ``base`` (see the module docstring). BLOCKING.

    :param base: a short private directory (the socket path must stay under 108 bytes).
    :param user: run the daemon as this user when we are root (created if missing); when we
        are not root, the daemon runs as us.
    :param migration_ports: ``(min, max)`` ports for incoming migrations.
    :param host_uuid: the daemon's host UUID (a fresh one by default).
    """

    def __init__(
        self,
        base: Path | str,
        *,
        user: str = DEFAULT_USER,
        migration_ports: tuple[int, int] | None = None,
        host_uuid: str | None = None,
    ) -> None:
        self.base = Path(base).absolute()
        check_base(self.base)
        self.user = user if os.geteuid() == 0 else None
        self.migration_ports = migration_ports
        self.host_uuid = host_uuid or str(uuid.uuid4())
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """The daemon's libvirt URI."""
        return session_uri(self.base)

    @property
    def socket_path(self) -> Path:
        """The daemon's unix socket."""
        return self.base / SOCKET

    def owner(self) -> tuple[int, int]:
        """:returns: the ``(uid, gid)`` the daemon and its QEMU processes run as."""
        if self.user is None:
            return os.geteuid(), os.getegid()
        return ensure_user(self.user)

    def prepare(self) -> None:
        """Create ``base`` with the configuration files, owned by the daemon's user."""
        uid, gid = self.owner()
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)  # QEMU (as the user) reaches files the agent puts here
        for relative, text in config_files(
            host_uuid=self.host_uuid, migration_ports=self.migration_ports
        ).items():
            path = self.base / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        run = self.base / "run"
        run.mkdir(exist_ok=True)
        os.chmod(run, 0o700)
        _chown_tree(self.base, uid, gid)

    def argv(self) -> list[str]:
        """The daemon's command line (through ``setpriv`` when it runs as another user)."""
        env = ["env", "-i", *(f"{k}={v}" for k, v in session_env(self.base).items())]
        if self.user is None:
            return [*env, "libvirtd"]
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups",
                *env, "libvirtd"]  # fmt: skip

    def start(self, output: IO[bytes] | int | None = subprocess.DEVNULL) -> subprocess.Popen:
        """Prepare and start the daemon (returns at once; see :meth:`wait_ready`)."""
        self.prepare()
        if self.socket_path.exists():
            self.socket_path.unlink()  # a stale socket would look ready
        self.proc = subprocess.Popen(
            self.argv(), cwd=self.base, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self.proc

    def wait_ready(self, timeout: float = 30.0) -> None:
        """
        Wait until the daemon accepts connections on its socket.

        :raises LibvirtdError: when it exits first or does not listen within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self.proc is not None and self.proc.poll() is not None:
                raise LibvirtdError(f"libvirtd exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise LibvirtdError(f"libvirtd did not listen on {self.socket_path} in time")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the daemon and wait (SIGKILL after ``timeout``); QEMU guests keep running.

        :returns: its exit status, or None if it was never started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
