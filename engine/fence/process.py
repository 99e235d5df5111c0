"""``process``: the power driver of a host made of processes (our test hosts), honest about it.

A test host (:mod:`vdsmlike.testhost`) is a launcher, a session ``libvirtd``, an agent and the
QEMU processes of its guests, all in one cgroup. Its power is its processes:

- **status**: ``on`` while the cgroup has processes, ``off`` when it has none (the proof lists
  them, or says it is empty);
- **off**: freeze the cgroup, list it, ``cgroup.kill``, then poll until ``cgroup.procs`` is
  empty *and* every killed process is gone from ``/proc``; ``done`` only then;
- **on**: run the configured start command (the launcher, detached, its output to a log);
  ``done`` once the cgroup has processes again and the agent's URL file is written.

Without cgroup v2 the driver follows the launcher's session and process tree instead
(:mod:`engine.fence.session`), from the launcher's state file, and says so in each proof.

Options (``check_options``): ``cgroup`` (a path under the cgroup v2 mount, absolute or relative
to it) and/or ``state_file`` (the launcher's ``testhost.json``, for the fallback); ``start``
(the start command, a list of strings); ``url_file`` (written by the host once its agent
listens); ``start_log``; ``start_timeout`` (60 s), ``stop_timeout`` (30 s), ``poll_interval``
(0.1 s). Every blocking call (cgroupfs, procfs, files) runs on the reactor's thread pool and
the waits are ``callLater`` polls: the reactor never blocks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer, provider

from . import result as fr
from .cgroup import Cgroup, CgroupUnavailable, find_cgroup2
from .interfaces import IPowerDriver, IPowerDriverFactory
from .procs import Proc, survivors
from .result import FenceAction, FenceResult
from .session import SessionTracker, StateUnreadable

T = TypeVar("T")

_DEFAULTS = {"start_timeout": 60.0, "stop_timeout": 30.0, "poll_interval": 0.1}
_PATHS = ("cgroup", "state_file", "url_file", "start_log")


def _check_start(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(a, str) and a and "\x00" not in a for a in value)
    ):
        raise ValueError("start must be the start command as a non-empty list of strings, "
                         f"got {value!r}")  # fmt: skip
    return list(value)


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """
    Validate and normalize the ``process`` driver's options (see the module docstring).

    :raises ValueError: for an unknown option, a wrong type, or neither ``cgroup`` nor
        ``state_file``.
    """
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be an object, got {type(options).__name__}")
    known = {*_PATHS, "start", *_DEFAULTS}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} (known: "
                         f"{', '.join(sorted(known))})")  # fmt: skip
    checked: dict[str, Any] = dict(_DEFAULTS)
    for name in _PATHS:
        value = options.get(name)
        if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
            raise ValueError(f"{name} must be a non-empty path, got {value!r}")
        if value is not None:
            checked[name] = value
    if "cgroup" not in checked and "state_file" not in checked:
        raise ValueError(
            "give cgroup (the host's cgroup v2 path) or state_file (the "
            "launcher's testhost.json, tracked by session without cgroup v2)"
        )
    if options.get("start") is not None:
        checked["start"] = _check_start(options["start"])
    for name, default in _DEFAULTS.items():
        value = options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        checked[name] = float(value)
    return checked


class _Tracked:
    """How the host's processes are found: its cgroup, or the launcher's session (fallback)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.cgroup: Cgroup | None = None
        self.session: SessionTracker | None = None
        self.problem = ""
        if "cgroup" in options:
            try:
                self.cgroup = Cgroup(options["cgroup"])
            except CgroupUnavailable as e:
                self.problem = str(e)
        if self.cgroup is None and "state_file" in options:
            self.session = SessionTracker(options["state_file"])
        if self.cgroup is None and self.session is None and not self.problem:
            self.problem = "no cgroup configured and no state_file to follow instead"

    @property
    def where(self) -> str:
        if self.cgroup is not None:
            return self.cgroup.where
        assert self.session is not None
        return self.session.where

    def members(self) -> list[Proc]:
        if self.cgroup is not None:
            return self.cgroup.members()
        assert self.session is not None
        return self.session.members()

    def kill(self) -> list[Proc]:
        if self.cgroup is not None:
            return self.cgroup.kill()
        assert self.session is not None
        return self.session.kill()


class _Started(ProcessProtocol):
    """The start command's process: remembers its exit status."""

    def __init__(self) -> None:
        self.status: int | None = None

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        signo = getattr(reason.value, "signal", None)
        self.status = code if code is not None else (-signo if signo else -1)


@implementer(IPowerDriver)
@provider(IPowerDriverFactory)
class ProcessPowerDriver:
    """
    The ``process`` power driver for one host (see the module docstring).

    :param options: checked options (:func:`check_options`).
    :param reactor: runs the threads, the polls and the start command.
    """

    name = "process"
    secret_options: frozenset[str] = frozenset()
    check_options = staticmethod(check_options)
    log = Logger()

    def __init__(self, options: Mapping[str, Any], *, reactor: Any) -> None:
        self._options = dict(options)
        self._reactor = reactor

    def _blocking(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    async def _sleep(self) -> None:
        await deferLater(self._reactor, self._options["poll_interval"], lambda: None)

    async def _tracked(self, action: str) -> tuple[_Tracked | None, FenceResult | None]:
        tracked = await self._blocking(_Tracked, self._options)
        if tracked.problem:
            return None, fr.unknown(action, f"cannot see the host's processes: {tracked.problem}")
        return tracked, None

    async def _members(self, tracked: _Tracked, action: str) -> list[Proc] | FenceResult:
        try:
            return await self._blocking(tracked.members)
        except (OSError, StateUnreadable) as e:
            return fr.unknown(action, f"cannot see the host's processes: {e}")

    # -- status ------------------------------------------------------------------------------

    def status(self) -> Deferred[FenceResult]:
        """See ``IPowerDriver.status``."""
        return Deferred.fromCoroutine(self._status())

    async def _status(self) -> FenceResult:
        tracked, problem = await self._tracked(FenceAction.STATUS)
        if tracked is None:
            return problem  # type: ignore[return-value]
        members = await self._members(tracked, FenceAction.STATUS)
        if isinstance(members, FenceResult):
            return members
        return fr.status_result(tracked.where, members)

    # -- off ---------------------------------------------------------------------------------

    def off(self) -> Deferred[FenceResult]:
        """See ``IPowerDriver.off``."""
        return Deferred.fromCoroutine(self._off())

    async def _off(self) -> FenceResult:
        tracked, problem = await self._tracked(FenceAction.OFF)
        if tracked is None:
            return problem  # type: ignore[return-value]
        before = await self._members(tracked, FenceAction.OFF)
        if isinstance(before, FenceResult):
            return before
        if not before:
            return fr.already_off(FenceAction.OFF, tracked.where)
        try:
            killed = await self._blocking(tracked.kill)
        except (OSError, StateUnreadable) as e:
            return fr.failed(FenceAction.OFF, f"cannot kill the host's processes: {e}",
                             power=fr.Power.ON, proof=f"{tracked.where}: {e}")  # fmt: skip
        self.log.info("killed {count} processes of {where}", count=len(killed), where=tracked.where)
        return await self._until_gone(tracked, killed or before)

    async def _until_gone(self, tracked: _Tracked, killed: list[Proc]) -> FenceResult:
        started, timeout = time.monotonic(), self._options["stop_timeout"]
        while True:
            try:
                left = await self._blocking(lambda: _left(tracked, killed))
            except (OSError, StateUnreadable) as e:
                return fr.unknown(
                    FenceAction.OFF, f"killed, but cannot see the host's processes any more: {e}"
                )
            waited = time.monotonic() - started
            if not left or waited >= timeout:
                break
            await self._sleep()
        if not left and self._options.get("url_file"):
            await self._blocking(_remove, self._options["url_file"])  # no stale announcement
        return fr.off_result(tracked.where, killed, left, waited=waited, timeout=timeout)

    # -- on ----------------------------------------------------------------------------------

    def on(self) -> Deferred[FenceResult]:
        """See ``IPowerDriver.on``."""
        return Deferred.fromCoroutine(self._on())

    async def _on(self) -> FenceResult:
        tracked, problem = await self._tracked(FenceAction.ON)
        if tracked is None:
            return problem  # type: ignore[return-value]
        before = await self._members(tracked, FenceAction.ON)
        if isinstance(before, FenceResult):
            return before
        if before:
            return fr.already_on(tracked.where, before)
        argv = self._options.get("start")
        if not argv:
            return fr.failed(FenceAction.ON, "no start command is configured (option start)",
                             power=fr.Power.OFF)  # fmt: skip
        url_file = self._options.get("url_file")
        if url_file:
            await self._blocking(_remove, url_file)  # the one left by the last run is stale
        try:
            started = await self._spawn(argv)
        except OSError as e:
            return fr.failed(FenceAction.ON, f"cannot run the start command {argv[0]}: {e}",
                             power=fr.Power.OFF)  # fmt: skip
        return await self._until_up(tracked, started, url_file)

    async def _spawn(self, argv: list[str]) -> _Started:
        log_path = self._options.get("start_log", os.devnull)
        fds = await self._blocking(_open_fds, log_path)
        protocol = _Started()
        try:
            self._reactor.spawnProcess(
                protocol, argv[0], argv, env=dict(os.environ),
                childFDs={0: fds[0], 1: fds[1], 2: fds[1]},
            )  # fmt: skip
        finally:
            for fd in fds:
                os.close(fd)
        self.log.info("power on: ran {argv}", argv=argv)
        return protocol

    async def _until_up(
        self, tracked: _Tracked, started: _Started, url_file: str | None
    ) -> FenceResult:
        begun, timeout = time.monotonic(), self._options["start_timeout"]
        while True:
            try:
                members, url = await self._blocking(lambda: (tracked.members(), _read(url_file)))
            except (OSError, StateUnreadable) as e:
                return fr.unknown(
                    FenceAction.ON, f"started, but cannot see the host's processes: {e}"
                )
            waited = time.monotonic() - begun
            up = bool(members) and (url_file is None or bool(url))
            gave_up = started.status not in (None, 0) and not members
            if up or gave_up or waited >= timeout:
                break
            await self._sleep()
        return fr.on_result(
            tracked.where,
            members,
            url=url,
            url_file=url_file,
            exited=started.status,
            waited=waited,
            timeout=timeout,
        )


def _left(tracked: _Tracked, killed: list[Proc]) -> list[Proc]:
    """The host's processes still alive: members now, and killed ones not yet gone."""
    now = {p.pid: p for p in tracked.members()}
    for p in survivors(killed):
        now.setdefault(p.pid, p)
    return sorted(now.values())


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _open_fds(log_path: str) -> tuple[int, int]:
    """stdin from /dev/null, output appended to ``log_path`` (BLOCKING)."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    try:
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        os.close(stdin)
        raise
    return stdin, out


def cgroup_v2_available() -> bool:
    """Whether cgroup v2 is mounted here (BLOCKING, small)."""
    return find_cgroup2() is not None
