"""The fallback when cgroup v2 cannot be used: a host's processes as one session and one tree.

The test-host launcher (:mod:`vdsmlike.testhost`) makes itself a session leader and a child
subreaper, and writes its pid, session and start time to a state file. Its processes are then

- every process of its session (what it starts and does not move elsewhere), and
- every descendant of the launcher while it lives (a child that calls ``setsid()``, as a
  daemon may, stays in the tree; an orphaned grandchild is reparented to the launcher, the
  subreaper, rather than to init).

Killing them: stop them all (SIGSTOP: no forks, no respawns), list them again until the list
is stable, then SIGKILL each. The limit, stated in every proof: a process that left both the
session and the tree after the launcher itself died cannot be seen here; cgroup v2 has no such
gap.

BLOCKING (procfs reads, signals): the engine calls it on a worker thread.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from .procs import Proc, all_procs


class StateUnreadable(OSError):
    """The launcher's state file is missing or not what the launcher writes."""


@dataclass(frozen=True)
class LauncherState:
    """What the launcher wrote about itself: its pid, its session (-1: it leads none, so only
    its tree counts) and its start time (clock ticks)."""

    pid: int
    sid: int
    start: int


def read_state(path: str) -> LauncherState:
    """:raises StateUnreadable: when ``path`` is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        sid = data.get("sid")  # None: the launcher could not lead a session of its own
        return LauncherState(int(data["pid"]), -1 if sid is None else int(sid),
                             int(data["start"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StateUnreadable(f"cannot read the launcher's state file {path}: {e}") from None


def members_of(state: LauncherState, procs: Sequence[Proc]) -> list[Proc]:
    """
    Pure: the processes of the host that ``state`` describes, among ``procs``.

    :returns: those in its session, and the launcher's descendants if the launcher (that very
        process, by start time) is among ``procs``.
    """
    chosen = {p.pid: p for p in procs if p.sid == state.sid}
    launcher = next((p for p in procs if p.pid == state.pid and p.start == state.start), None)
    if launcher is not None:
        children: dict[int, list[Proc]] = {}
        for p in procs:
            children.setdefault(p.ppid, []).append(p)
        todo, seen = [launcher], {launcher.pid}
        while todo:
            parent = todo.pop()
            chosen[parent.pid] = parent
            for child in children.get(parent.pid, ()):
                if child.pid not in seen:
                    seen.add(child.pid)
                    todo.append(child)
    return sorted(chosen.values())


class SessionTracker:
    """
    A host's processes found from its launcher's state file (see the module docstring).

    :param state_file: the launcher's ``testhost.json``.
    """

    def __init__(self, state_file: str) -> None:
        self.state_file = state_file

    @property
    def where(self) -> str:
        """Names the process set in proofs."""
        return (f"the session and process tree of the launcher in {self.state_file} "
                "(no cgroup v2)")  # fmt: skip

    def members(self) -> list[Proc]:
        """The host's live processes. :raises StateUnreadable:"""
        return members_of(read_state(self.state_file), all_procs())

    def kill(self) -> list[Proc]:
        """Stop every member, list them until stable, then SIGKILL them. :returns: them."""
        state = read_state(self.state_file)
        seen: dict[int, Proc] = {}
        for _ in range(10):
            found = members_of(state, all_procs())
            fresh = [p for p in found if p.pid not in seen]
            if not fresh:
                break
            for p in fresh:
                seen[p.pid] = p
                _signal(p.pid, signal.SIGSTOP)
        for p in seen.values():
            _signal(p.pid, signal.SIGKILL)
        return sorted(seen.values())


def _signal(pid: int, signo: int) -> None:
    if pid == os.getpid():
        return  # never the engine itself, whatever the state file says
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        pass
