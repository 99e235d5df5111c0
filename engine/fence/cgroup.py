"""A host's processes as one cgroup v2 directory: list them, freeze them, kill them all at once.

cgroup v2 gives exactly what power fencing of a process-made host needs: every process a
member starts stays a member (whatever it does with sessions, double forks or daemonizing), and
the kernel kills them all with one write to ``cgroup.kill`` (Linux 5.14+), new forks included.
``cgroup.procs`` lists the members, which is the proof that none is left.

Where cgroup v2 is mounted differs (``/sys/fs/cgroup`` on unified hosts, ``/sys/fs/cgroup/unified``
on hybrid ones), so it is found in ``/proc/mounts`` (:func:`cgroup2_mount`, pure).

Everything here blocks briefly (cgroupfs reads and writes): the engine calls it on a worker
thread; :mod:`vdsmlike.testhost` calls it directly.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from .procs import Proc, read_procs

MOUNTS = "/proc/mounts"


class CgroupUnavailable(OSError):
    """cgroup v2 is not mounted here, or the cgroup cannot be used."""


def cgroup2_mount(mounts: str) -> str | None:
    """
    :param mounts: the text of ``/proc/mounts``.
    :returns: where the cgroup v2 hierarchy is mounted, or None.
    """
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            # /proc/mounts escapes spaces and a few others as octal (\040).
            return fields[1].encode().decode("unicode_escape")
    return None


def find_cgroup2(mounts_file: str = MOUNTS) -> str | None:
    """:returns: where cgroup v2 is mounted on this machine, or None."""
    try:
        with open(mounts_file, encoding="utf-8") as f:
            return cgroup2_mount(f.read())
    except OSError:
        return None


def resolve(path: str, mount: str) -> Path:
    """
    The directory of cgroup ``path``: absolute paths must lie under ``mount``; relative ones
    are taken from it.

    :raises CgroupUnavailable: for a path outside the hierarchy (``..`` included).
    """
    root = Path(mount)
    full = Path(path) if os.path.isabs(path) else root / path
    full = Path(os.path.normpath(full))
    if full != root and root not in full.parents:
        raise CgroupUnavailable(f"{path} is not a cgroup under {mount}")
    return full


class Cgroup:
    """
    One cgroup v2 directory (BLOCKING methods).

    :param path: the cgroup, absolute (under the mount) or relative to the mount.
    :param mount: the cgroup v2 mount; found in ``/proc/mounts`` when None.
    :raises CgroupUnavailable: when cgroup v2 is not mounted, or ``path`` lies outside it.
    """

    def __init__(self, path: str, *, mount: str | None = None) -> None:
        mount = mount or find_cgroup2()
        if mount is None:
            raise CgroupUnavailable("cgroup v2 is not mounted on this machine")
        self.mount = mount
        self.path = resolve(path, mount)

    @property
    def where(self) -> str:
        """Names the cgroup in proofs."""
        return f"cgroup {self.path}"

    def exists(self) -> bool:
        """Whether the directory exists (a cgroup that does not has no processes)."""
        return (self.path / "cgroup.procs").exists()

    def pids(self) -> list[int]:
        """The member pids (none when the cgroup does not exist)."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    def members(self) -> list[Proc]:
        """The live member processes."""
        return read_procs(self.pids())

    def create(self) -> None:
        """Create the cgroup (and its parents) unless it exists, thawed."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.freeze(False)

    def enter(self, pid: int) -> None:
        """Move process ``pid`` into the cgroup (its later children stay there)."""
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def freeze(self, frozen: bool) -> bool:
        """Freeze or thaw every member; :returns: False when the kernel has no freezer here."""
        knob = self.path / "cgroup.freeze"
        if not knob.exists():
            return False
        knob.write_text("1\n" if frozen else "0\n")
        return True

    def kill(self) -> list[Proc]:
        """
        Kill every member with SIGKILL, freezing them first so the list is complete and none
        forks meanwhile, then thaw the cgroup (so it can be used again at the next power-on).

        :returns: the members as they were when killed.
        """
        if not self.exists():
            return []
        frozen = self.freeze(True)
        try:
            members = self.members()
            knob = self.path / "cgroup.kill"
            if knob.exists():
                knob.write_text("1\n")
            else:  # before Linux 5.14: one by one, safe while frozen
                for proc in members:
                    _kill(proc.pid)
        finally:
            if frozen:
                self.freeze(False)
        return members

    def remove(self, *, parent: bool = False, timeout: float = 5.0) -> bool:
        """
        Remove the (empty) cgroup, and its parent too if asked and empty. The kernel answers
        EBUSY for a while after the last process exits, and for a parent whose child is still
        being torn down, so this retries until ``timeout``.

        :returns: whether every directory asked for is gone.
        """
        paths = [self.path, self.path.parent] if parent else [self.path]
        deadline = time.monotonic() + timeout
        for path in paths:
            if path == Path(self.mount):
                break
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        return False
                    time.sleep(0.02)
        return True

    def kill_others(self, keep: int) -> list[Proc]:
        """SIGKILL every member but ``keep`` (a launcher stopping its host). :returns: them."""
        members = [p for p in self.members() if p.pid != keep]
        for proc in members:
            _kill(proc.pid)
        return members


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
