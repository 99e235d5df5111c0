"""The processes of a host, as ``/proc`` shows them: who they are, whether they still live.

A process is known by its pid *and* its start time (``/proc/<pid>/stat`` field 22, clock ticks
since boot), so a pid reused by a newcomer is never mistaken for the process that was killed.
A zombie (state ``Z``) is dead: it only waits for its parent to read its status.

:func:`parse_stat` and :func:`describe` are pure; the readers block briefly (procfs reads), so
the engine calls them on a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Proc:
    """
    One process.

    :ivar pid: its id.
    :ivar name: its command name (``comm``, at most 15 characters).
    :ivar state: ``R``, ``S``, ``D``, ``T``, ``Z``...
    :ivar ppid: its parent.
    :ivar sid: its session.
    :ivar start: when it started, in clock ticks since boot (with ``pid``, its identity).
    """

    pid: int
    name: str
    state: str
    ppid: int
    sid: int
    start: int

    @property
    def zombie(self) -> bool:
        """True for a process that has exited and waits to be reaped."""
        return self.state in ("Z", "X")


def parse_stat(text: str) -> Proc:
    """
    A :class:`Proc` from the text of ``/proc/<pid>/stat``.

    The command name is in parentheses and may itself hold spaces and parentheses, so the
    fields are counted from the *last* closing parenthesis.

    :raises ValueError: for text that is not such a line.
    """
    head, sep, tail = text.rpartition(")")
    pid_text, paren, name = head.partition(" (")
    fields = tail.split()
    if not sep or not paren or len(fields) < 20:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    # After the name: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime
    return Proc(
        pid=int(pid_text), name=name, state=fields[0], ppid=int(fields[1]),
        sid=int(fields[3]), start=int(fields[19]),
    )  # fmt: skip


def describe(procs: Iterable[Proc], limit: int = 12) -> str:
    """``"libvirtd 123, qemu-system-x86 456"`` (by pid, at most ``limit``, then a count)."""
    ordered = sorted(procs, key=lambda p: p.pid)
    shown = ", ".join(f"{p.name} {p.pid}" for p in ordered[:limit])
    rest = len(ordered) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown or "none"


# -- reading /proc (blocking) ------------------------------------------------------------------

PROC = "/proc"


def read_proc(pid: int, proc: str = PROC) -> Proc | None:
    """:returns: the process ``pid`` as ``/proc`` shows it, or None if there is none."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    except OSError:
        return None


def read_procs(pids: Iterable[int], proc: str = PROC) -> list[Proc]:
    """:returns: the processes among ``pids`` that exist and are not zombies."""
    found = (read_proc(pid, proc) for pid in pids)
    return [p for p in found if p is not None and not p.zombie]


def all_procs(proc: str = PROC) -> list[Proc]:
    """:returns: every live (non-zombie) process of the machine."""
    pids = (int(name) for name in os.listdir(proc) if name.isdigit())
    return read_procs(pids, proc)


def alive(process: Proc, proc: str = PROC) -> bool:
    """True while this very process (pid and start time) exists and is not a zombie."""
    now = read_proc(process.pid, proc)
    return now is not None and now.start == process.start and not now.zombie


def survivors(procs: Sequence[Proc], proc: str = PROC) -> list[Proc]:
    """:returns: those of ``procs`` still alive."""
    return [p for p in procs if alive(p, proc)]
