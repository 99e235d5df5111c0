r"""Executable hook scripts, run with VDSM's protocol as child processes of the reactor.

Layout ``<hooks_dir>/<point>/<script>``: regular files executable by us (``os.access X_OK``),
run in lexicographic order. The payload goes into one temporary file (in ``runtime_dir``) that
every script of the point reads and may rewrite, named by ``_hook_domxml`` (XML and payload-less
points) or ``_hook_json`` (JSON points). Exit codes: 0 ok; 1 error, continue; 2 error, stop the
point; >2 warning, continue, counted as an error. See ``../shared/reference/vdsm.md`` section 4.

Process groups. Twisted's ``spawnProcess`` cannot run code in the child before ``exec``, so
each script is started through a launcher that calls ``setsid()`` and then ``exec``\ s the script
without forking: util-linux ``setsid`` when it is installed (about 1 ms), else a tiny Python
launcher, ``sys.executable -I -S -c <launcher> <script>`` (about 10 ms). The reactor's child is
never a process-group leader, so neither forks: the script keeps the spawned pid, which is also
its process-group and session id. Stdin is a pipe closed at once (the script reads EOF).

Timeouts. A script still running at its deadline (``timeouts[point]``, else ``timeout``, counted
per script) gets ``SIGKILL`` sent to its whole process group and counts as failed (rc None,
``timed_out``). A script that exits while descendants still hold its stdout or stderr open is
given ``linger`` seconds (capped by its deadline) for them to let go; then the group is killed,
the pipes are closed and the script's own rc counts. A descendant that closed its stdio is left
alone. If even killing does not close the pipes (a grandchild that left the group), the runner
stops waiting ``kill_grace`` seconds after the kill.

Threads. Listing scripts and the payload file's I/O run in the reactor's thread pool; the
reactor thread only spawns processes and collects their output. :meth:`installed` is the
exception: it reads and hashes the scripts on the caller's thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import protocol, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hooks import points as hook_points

#: The directory that makes ``import hooking`` and ``from vdsm.hook import hooking`` work.
PYTHONPATH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pythonpath")
#: The variable that tells ``hooking`` where launch-flags files live.
RUNTIME_DIR_VAR = "VDSMLIKE_RUNTIME_DIR"
#: How much of each of a script's stdout and stderr is kept (the last bytes).
OUTPUT_LIMIT = 64 * 1024

_LAUNCHER = (
    "import os,sys\n"
    "os.setsid()\n"
    "try:\n"
    " os.execv(sys.argv[1],sys.argv[1:])\n"
    "except OSError as e:\n"
    " sys.stderr.write('cannot execute %s: %s\\n'%(sys.argv[1],e))\n"
    " os._exit(127)\n"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class ScriptResult:
    """How one script ran.

    :ivar name: the script's file name.
    :ivar rc: its exit code, or None if it was killed or died of a signal.
    :ivar stdout: the tail of its stdout (decoded, invalid UTF-8 replaced).
    :ivar stderr: the tail of its stderr.
    :ivar timed_out: whether it was killed for running past its timeout.
    """

    name: str
    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool = False


@dataclass
class ScriptsOutcome:
    """What the scripts of one point did.

    :ivar payload: the final payload: XML as str, JSON parsed, or the original payload when
        the file could not be read back (or for payload-less points).
    :ivar results: one :class:`ScriptResult` per script that ran, in order.
    :ivar errors: one message per failure: the script's stderr (or ``"<script>: rc=N"`` when
        it wrote none), a timeout, or a payload-file problem.
    :ivar stopped: whether a script exited with 2 and stopped the point.
    """

    payload: Any
    results: list[ScriptResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return not self.errors


def launch_flags_path(runtime_dir: str, vm_id: str) -> str:
    """:returns: ``<runtime_dir>/<vm_id>/launchflags``, as ``hooking`` writes it."""
    if not vm_id or "/" in vm_id or vm_id in (".", ".."):
        raise ValueError(f"invalid vm id: {vm_id!r}")
    return os.path.join(runtime_dir, vm_id, "launchflags")


def read_launch_flags(runtime_dir: str, vm_id: str) -> int | None:
    """Read the launch flags a hook stored for ``vm_id`` (small blocking read).

    :returns: the flags, or None when there is no file or it does not hold a number.
    """
    try:
        with open(launch_flags_path(runtime_dir, vm_id)) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def take_launch_flags(runtime_dir: str, vm_id: str) -> int | None:
    """Read the launch flags a hook stored for ``vm_id`` and remove the file, so that they
    apply to this start only (small blocking I/O).

    :returns: the flags, or None when there were none.
    """
    flags = read_launch_flags(runtime_dir, vm_id)
    try:
        os.unlink(launch_flags_path(runtime_dir, vm_id))
    except OSError:
        pass
    return flags


def _executables(directory: str) -> list[str]:
    """:returns: the sorted names of the executable regular files in ``directory``."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        n
        for n in names
        if os.path.isfile(p := os.path.join(directory, n)) and os.access(p, os.X_OK)
    ]


class _ScriptProtocol(protocol.ProcessProtocol):
    """Collects one script's output tails and reports its exit and the end of its pipes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.exited: Deferred[int | None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None

    def connectionMade(self) -> None:  # noqa: N802
        # The transport forgets its pid once the child is reaped, which can happen before
        # spawnProcess returns; the pid is still the group id of the script's leftovers.
        self.pid = self.transport.pid if self.transport is not None else None

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N802, N803
        buf = self.out if childFD == 1 else self.err
        buf += data
        if len(buf) > OUTPUT_LIMIT:
            del buf[:-OUTPUT_LIMIT]

    def processExited(self, reason: Failure) -> None:  # noqa: N802
        self.exited.callback(getattr(reason.value, "exitCode", None))

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.ended.callback(None)


class ScriptHookRunner:
    """Runs the executable scripts of a hook point with VDSM's protocol.

    :param hooks_dir: the directory holding one directory per point.
    :param reactor: provides ``spawnProcess``, ``callLater`` and ``getThreadPool``.
    :param runtime_dir: where payload files and launch-flags files live (created on demand).
    :param timeout: seconds each script may run.
    :param timeouts: per-point overrides of ``timeout``.
    :param base_env: the scripts' base environment (default: the agent's, read at each run).
    :param linger: seconds a script's descendants may keep its output pipes after it exited.
    :param kill_grace: seconds to wait for the pipes to close after a kill.
    :param setsid: the util-linux ``setsid`` binary to launch scripts with; by default the one
        on ``PATH`` (looked up once, here); ``""`` forces the Python launcher.
    """

    log = Logger()

    def __init__(
        self,
        hooks_dir: str,
        *,
        reactor: Any,
        runtime_dir: str,
        timeout: float = 300.0,
        timeouts: Mapping[str, float] | None = None,
        base_env: Mapping[str, str] | None = None,
        linger: float = 1.0,
        kill_grace: float = 1.0,
        setsid: str | None = None,
    ) -> None:
        self.hooks_dir = hooks_dir
        self.runtime_dir = runtime_dir
        self.timeout = timeout
        self.timeouts = dict(timeouts or {})
        self._reactor = reactor
        self._base_env = base_env
        self._linger = linger
        self._kill_grace = kill_grace
        self._setsid = shutil.which("setsid") if setsid is None else setsid

    def run(
        self,
        point: str,
        payload: Any,
        *,
        vm_id: str | None = None,
        custom: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Deferred[ScriptsOutcome]:
        """Run every script of ``point`` in order, chaining the payload through them.

        :param point: a hook point name.
        :param payload: XML (str), a JSON-able object (JSON points), or None (an empty file).
        :param vm_id: exported as ``vmId``.
        :param custom: custom properties, one variable each (invalid names are skipped).
        :param params: extra variables (VDSM's ``params``), set before ``custom``.
        :returns: a Deferred firing with a :class:`ScriptsOutcome`. Failing scripts, timeouts
            and payload-file problems are reported in it, never raised. It fails with
            :class:`hooks.points.UnknownHookPoint` for an unknown point, and with ``OSError``
            or ``TypeError`` if the payload file cannot be written at all.
        """
        return Deferred.fromCoroutine(self._run(point, payload, vm_id, custom, params))

    def installed(self) -> dict[str, dict[str, dict[str, str]]]:
        """Inventory for ``Host.getCapabilities``: blocking, on the caller's thread.

        It lists and hashes the scripts (small local files); the agent calls it rarely.

        :returns: ``{point: {script: {"checksum": sha256 hex}}}`` for every known point whose
            directory exists, executable regular files only.
        """
        result: dict[str, dict[str, dict[str, str]]] = {}
        for name in hook_points.POINTS:
            directory = os.path.join(self.hooks_dir, name)
            if not os.path.isdir(directory):
                continue
            result[name] = {}
            for script in _executables(directory):
                try:
                    with open(os.path.join(directory, script), "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                except OSError:
                    continue
                result[name][script] = {"checksum": digest}
        return result

    async def _run(self, point, payload, vm_id, custom, params) -> ScriptsOutcome:
        spec = hook_points.point(point)
        directory = os.path.join(self.hooks_dir, spec.name)
        pool = self._reactor.getThreadPool()
        scripts, path = await threads.deferToThreadPool(
            self._reactor, pool, self._prepare, directory, spec, payload
        )
        outcome = ScriptsOutcome(payload)
        if not scripts:
            return outcome
        try:
            env = self._environment(spec, path, vm_id, custom, params)
            timeout = self.timeouts.get(spec.name, self.timeout)
            for name in scripts:
                result = await self._run_script(os.path.join(directory, name), env, timeout)
                outcome.results.append(result)
                self._account(outcome, result, timeout)
                if result.rc == 2:
                    outcome.stopped = True
                    break
        finally:
            final, error = await threads.deferToThreadPool(
                self._reactor, pool, _read_back, path, spec.payload, payload
            )
        outcome.payload = final
        if error:
            self.log.warn("hook point {point}: {error}", point=point, error=error)
            outcome.errors.append(error)
        return outcome

    def _prepare(self, directory: str, spec: hook_points.HookPoint, payload: Any):
        """In a thread: list the scripts and, if there are any, write the payload file."""
        scripts = _executables(directory)
        if not scripts:
            return scripts, None
        if spec.payload == "json":
            data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        elif payload is None or isinstance(payload, bytes):
            data = payload or b""
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            raise TypeError(f"{spec.name} needs an XML str payload, not {type(payload)!r}")
        os.makedirs(self.runtime_dir, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"hook-{spec.name}-", dir=self.runtime_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return scripts, path

    def _environment(self, spec, path, vm_id, custom, params) -> dict[str, str]:
        """:returns: the scripts' environment (VDSM's order: base, params, custom, vmId, file)."""
        env = dict(os.environ if self._base_env is None else self._base_env)
        for source in (params or {}), (custom or {}):
            for key, value in source.items():
                checked = _env_value(key, value)
                if checked is None:
                    self.log.warn(
                        "hook point {point}: skipping variable {key!r}: not a valid environment"
                        " name or value",
                        point=spec.name,
                        key=key,
                    )
                    continue
                env[key] = checked
        if vm_id is not None:
            env["vmId"] = vm_id
        env["_hook_json" if spec.payload == "json" else "_hook_domxml"] = path
        current = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{current}{os.pathsep}{PYTHONPATH_DIR}" if current else PYTHONPATH_DIR
        env[RUNTIME_DIR_VAR] = self.runtime_dir
        return env

    def _account(self, outcome: ScriptsOutcome, result: ScriptResult, timeout: float) -> None:
        """Log ``result`` VDSM-style and add its error, if any, to ``outcome``."""
        self.log.info(
            "{script}: rc={rc} err={err}", script=result.name, rc=result.rc, err=result.stderr
        )
        if result.stdout:
            self.log.debug("{script}: out={out}", script=result.name, out=result.stdout)
        if result.timed_out:
            outcome.errors.append(f"{result.name}: timed out after {timeout:g} s and was killed")
        elif result.rc != 0:
            outcome.errors.append(result.stderr.strip() or f"{result.name}: rc={result.rc}")
            if result.rc is not None and result.rc > 2:
                self.log.warn("{script}: reserved rc={rc}", script=result.name, rc=result.rc)

    def _run_script(self, path: str, env: dict[str, str], timeout: float):
        """Spawn one script; :returns: a Deferred firing with its :class:`ScriptResult`."""
        proto = _ScriptProtocol()
        if self._setsid:
            argv = [self._setsid, path]
        else:
            argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, path]
        transport = self._reactor.spawnProcess(
            proto, argv[0], argv, env=env, usePTY=False, childFDs={0: "w", 1: "r", 2: "r"}
        )
        transport.closeStdin()
        return _Watch(self._reactor, transport, proto, os.path.basename(path)).start(
            timeout, self._linger, self._kill_grace
        )


class _Watch:
    """Waits for one spawned script: its exit, its pipes, its deadline; kills its group."""

    log = Logger()

    def __init__(self, reactor: Any, transport: Any, proto: _ScriptProtocol, name: str) -> None:
        self._reactor = reactor
        self._transport = transport
        self._proto = proto
        self._name = name
        self._pgid = proto.pid
        self._rc: int | None = None
        self._timed_out = False
        self._calls: list[Any] = []
        self._done: Deferred[ScriptResult] = Deferred()

    def start(self, timeout: float, linger: float, grace: float) -> Deferred[ScriptResult]:
        """:returns: a Deferred firing with the :class:`ScriptResult` (it never fails)."""
        self._deadline = self._reactor.seconds() + timeout
        self._grace = grace
        self._expiry = self._reactor.callLater(timeout, self._expire)
        self._calls.append(self._expiry)
        self._proto.exited.addCallback(self._exited, linger)
        self._proto.ended.addCallback(lambda _: self._finish())
        return self._done

    def _exited(self, rc: int | None, linger: float) -> None:
        self._rc = rc
        if self._timed_out or self._done.called:
            return
        self._expiry.cancel()  # it exited in time; only its descendants may still linger
        wait = max(0.0, min(linger, self._deadline - self._reactor.seconds()))
        self._calls.append(self._reactor.callLater(wait, self._lingered))

    def _lingered(self) -> None:
        self.log.warn(
            "{script}: exited but its children kept its output open; killing its group",
            script=self._name,
        )
        self._kill()
        self._close_pipes()

    def _expire(self) -> None:
        self._timed_out = True
        self._rc = None
        self._kill()
        self._calls.append(self._reactor.callLater(self._grace, self._close_pipes))

    def _kill(self) -> None:
        if not self._pgid:
            return
        try:
            os.killpg(self._pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _close_pipes(self) -> None:
        for fd in (1, 2):
            try:
                self._transport.closeChildFD(fd)
            except Exception:  # noqa: BLE001 - already closed
                pass
        self._calls.append(self._reactor.callLater(self._grace, self._finish))

    def _finish(self) -> None:
        if self._done.called:
            return
        for call in self._calls:
            if call.active():
                call.cancel()
        proto = self._proto
        self._done.callback(
            ScriptResult(
                self._name,
                None if self._timed_out else self._rc,
                proto.out.decode("utf-8", "replace"),
                proto.err.decode("utf-8", "replace"),
                self._timed_out,
            )
        )


def _env_value(key: Any, value: Any) -> str | None:
    """:returns: ``value`` as an environment string, or None if ``key``/``value`` cannot be."""
    if not isinstance(key, str) or not _ENV_NAME.match(key):
        return None
    if isinstance(value, bool | int | float):
        value = str(value)
    if not isinstance(value, str) or "\0" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _read_back(path: str | None, kind: str, original: Any) -> tuple[Any, str | None]:
    """In a thread: read the payload file, remove it. :returns: (payload, error or None)."""
    if path is None:
        return original, None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return original, "hook deleted its payload file"
    try:
        os.unlink(path)
    except OSError:
        pass
    if kind == "none":
        return original, None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return original, "hook wrote a payload that is not UTF-8"
    if kind == "xml":
        return text, None
    if not text.strip():
        return (None, None) if original is None else (original, "hook emptied its JSON payload")
    try:
        return json.loads(text), None
    except ValueError as e:
        return original, f"hook wrote invalid JSON: {e}"
