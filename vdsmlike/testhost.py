"""``python -m vdsmlike.testhost``: one real test host on this machine, killable as a whole.

A "host" in our real tests is a libvirt (a session ``libvirtd`` run as an unprivileged user,
or an embedded QEMU root), an agent, and the QEMU processes of its guests. This launcher makes
one, the way a machine boots:

1. it becomes a session leader and a child subreaper, creates its cgroup (``--cgroup NAME``,
   under the cgroup v2 mount found in ``/proc/mounts``) and moves itself into it, so that
   everything it starts, guests included, is in the cgroup: the ``process`` power driver
   (:mod:`engine.fence.process`) kills the host as one unit with ``cgroup.kill``;
2. it writes ``D/testhost.json`` (its pid, session, start time, cgroup, port: what the power
   driver's session fallback follows when cgroup v2 cannot be used);
3. it starts the session ``libvirtd`` (:mod:`vdsmlike.libvirtd`; ``--libvirtd``, the default),
   or points the agent at an embedded root ``D/root`` (``--embedded``) or at any URI
   (``--libvirt-uri test:///default``: a host without QEMU, for fast tests);
4. it runs the agent on ``127.0.0.1:PORT`` (the same port at every start, so the engine's link
   finds it again), copies its URL to ``D/agent.url`` once it listens, and starts it again
   whenever it exits (``Restart=always``, with a backoff from 0.2 s doubling to 5 s, reset
   after a run of 10 s): ``Host.restart`` makes it exit with status 75 for exactly this.

SIGTERM stops the host: the agent, then ``libvirtd``, then whatever still runs in it (its
guests); the cgroup stays, empty. Files in ``D``: ``testhost.json``, ``agent.url``,
``agent.conf``, ``agent/`` (the agent's state dir), ``agent.log``, ``libvirtd.log``, ``lv/``
(the daemon's XDG dirs; ``D`` must be short: the socket path must fit 108 bytes).

A blocking program with no reactor: it is a supervisor, like an init system.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from engine.fence.cgroup import Cgroup, CgroupUnavailable
from engine.fence.procs import all_procs, read_proc
from engine.fence.session import LauncherState, members_of

from .libvirtd import LibvirtdError, SessionLibvirtd

#: ``prctl(PR_SET_CHILD_SUBREAPER)``: orphaned descendants are reparented to us, not to init.
_PR_SET_CHILD_SUBREAPER = 36
#: What the agent gets unless ``--set`` says otherwise.
AGENT_DEFAULTS = {
    "vars.domain_type": "qemu",
    "vars.vm_sample_interval": "2",
    "vars.host_sample_interval": "2",
    "vars.guest_wait_timeout": "30",
    "mom.enabled": "false",
}


#: The embedded root's ``qemu.conf``: QEMU as root (the root dir is private), output to files,
#: and no cgroups of libvirt's own.
EMBEDDED_QEMU_CONF = """\
stdio_handler = "file"
user = "root"
group = "root"
cgroup_controllers = [ ]
"""


def log(message: str) -> None:
    """One timestamped line on stdout (the launcher's log)."""
    stamp = time.strftime("%H:%M:%S", time.localtime())
    print(f"{stamp} testhost[{os.getpid()}]: {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m vdsmlike.testhost", description=__doc__.split(
        "\n")[0])  # fmt: skip
    p.add_argument("--dir", required=True, help="the host's directory (short: socket paths)")
    p.add_argument("--cgroup", help="cgroup v2 path for the host, relative to the mount")
    p.add_argument(
        "--require-cgroup",
        action="store_true",
        help="exit 3 instead of falling back to session tracking",
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--libvirtd", action="store_true", help="a session libvirtd (default)")
    kind.add_argument("--embedded", action="store_true", help="an embedded QEMU root D/root")
    kind.add_argument("--libvirt-uri", help="use this libvirt instead (e.g. test:///default)")
    p.add_argument("--port", type=int, default=0, help="the agent's port (0: pick one once)")
    p.add_argument("--user", default="vlmig", help="the user the session libvirtd runs as")
    p.add_argument("--migration-ports", help="MIN-MAX ports for incoming migrations")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="an agent setting, e.g. vars.vm_sample_interval=1",
    )
    p.add_argument("--respawn-delay", type=float, default=0.2, help="first respawn backoff, s")
    p.add_argument("--respawn-max", type=float, default=5.0, help="longest respawn backoff, s")
    return p.parse_args(argv)


def agent_config(settings: list[str]) -> str:
    """Pure: the agent's INI text from ``AGENT_DEFAULTS`` and ``SECTION.KEY=VALUE`` overrides.

    :raises ValueError: for a setting without a section or a value.
    """
    values = dict(AGENT_DEFAULTS)
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        values[key.strip()] = value.strip()
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, []).append(f"{name} = {value}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` so that a reader sees the old text or the new, never a part."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def remove(path: Path) -> None:
    """Remove ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class TestHost:
    """The launcher of one test host (see the module docstring)."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.dir).absolute()
        self.stopping = threading.Event()
        self.cgroup: Cgroup | None = None
        self.daemon: SessionLibvirtd | None = None
        self.agent: subprocess.Popen | None = None
        self.port = args.port or free_port()
        self.starts = 0
        self.state: dict[str, Any] = {}

    # -- boot ------------------------------------------------------------------------------

    def boot(self) -> str:
        """Detach, enter the cgroup, write the state file, start libvirt. :returns: its URI."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # QEMU, as the daemon's user, reaches the serial dir below
        leader = self._detach()
        self._enter_cgroup()
        me = read_proc(os.getpid())
        assert me is not None
        self.state = {
            "pid": os.getpid(), "sid": os.getsid(0) if leader else None, "start": me.start,
            "cgroup": str(self.cgroup.path) if self.cgroup else None,
            "mode": "cgroup" if self.cgroup else "session", "port": self.port,
            "dir": str(self.dir), "agent_pid": None, "agent_starts": 0,
        }  # fmt: skip
        self._save()
        remove(self.dir / "agent.url")
        uri = self._start_libvirt()
        self.state["uri"] = uri
        self._save()
        return uri

    def _detach(self) -> bool:
        """Lead a session of our own and adopt orphans. :returns: whether we lead it."""
        try:
            os.setsid()
        except OSError:
            pass  # already a process group leader (e.g. started by a shell as a job)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log(f"cannot become a child subreaper: errno {ctypes.get_errno()}")
        return os.getsid(0) == os.getpid()

    def _enter_cgroup(self) -> None:
        if not self.args.cgroup:
            log("no --cgroup: the host is tracked by its session and process tree")
            return
        try:
            cgroup = Cgroup(self.args.cgroup)
            cgroup.create()
            cgroup.enter(os.getpid())
        except (CgroupUnavailable, OSError) as e:
            if self.args.require_cgroup:
                raise
            log(f"cgroup {self.args.cgroup} unusable ({e}): tracked by session instead")
            return
        self.cgroup = cgroup
        log(f"in {cgroup.where}")

    def _save(self) -> None:
        write_atomically(self.dir / "testhost.json", json.dumps(self.state, indent=1) + "\n")

    def _start_libvirt(self) -> str:
        state_dir = self.dir / "agent"
        serial = state_dir / "serial"
        serial.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o755)
        if self.args.libvirt_uri:
            return self.args.libvirt_uri
        if self.args.embedded:
            return self._embedded_root()
        ports = None
        if self.args.migration_ports:
            low, _, high = self.args.migration_ports.partition("-")
            ports = (int(low), int(high))
        self.daemon = SessionLibvirtd(self.dir / "lv", user=self.args.user,
                                      migration_ports=ports)  # fmt: skip
        with open(self.dir / "libvirtd.log", "ab") as out:
            self.daemon.start(out)
        self.daemon.wait_ready()
        uid, gid = self.daemon.owner()
        os.chown(serial, uid, gid)  # QEMU runs as the daemon's user and writes the consoles
        log(f"libvirtd {self.daemon.proc.pid} listens: {self.daemon.uri}")  # type: ignore[union-attr]
        return self.daemon.uri

    def _embedded_root(self) -> str:
        """An embedded QEMU root whose guests stay in our cgroup. :returns: its URI."""
        etc = self.dir / "root" / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        # As root, libvirt would move each QEMU into a cgroup of its own (machine/...), out of
        # the host's: no cgroup controllers keeps them where their agent started them.
        (etc / "qemu.conf").write_text(EMBEDDED_QEMU_CONF)
        return f"qemu:///embed?root={self.dir / 'root'}"

    # -- the agent -------------------------------------------------------------------------

    def _spawn_agent(self, uri: str, output: IO[bytes]) -> subprocess.Popen:
        conf = self.dir / "agent.conf"
        conf.write_text(agent_config(self.args.set))
        remove(self.dir / "agent" / "agent.url")  # the next one is the new agent's
        argv = [sys.executable, "-m", "vdsmlike.cli.agent", "--config", str(conf),
                "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.dir / "agent"),
                "--libvirt-uri", uri]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT)  # fmt: skip
        self.starts += 1
        self.state.update(agent_pid=proc.pid, agent_starts=self.starts)
        self._save()
        log(f"agent {proc.pid} started (start {self.starts}) on port {self.port}")
        return proc

    def _publish_url(self) -> None:
        """Copy the agent's URL to ``D/agent.url`` once it listens."""
        try:
            url = (self.dir / "agent" / "agent.url").read_text().strip()
        except FileNotFoundError:
            return
        target = self.dir / "agent.url"
        if url and (not target.exists() or target.read_text().strip() != url):
            write_atomically(target, url + "\n")
            log(f"agent listens: {url}")

    def supervise(self, uri: str) -> None:
        """Run the agent, starting it again whenever it exits, until SIGTERM."""
        delay = self.args.respawn_delay
        with open(self.dir / "agent.log", "ab") as output:
            while not self.stopping.is_set():
                self.agent = self._spawn_agent(uri, output)
                began = time.monotonic()
                while self.agent.poll() is None and not self.stopping.is_set():
                    self._publish_url()
                    self._reap_orphans()
                    self.stopping.wait(0.1)
                if self.stopping.is_set():
                    break
                ran = time.monotonic() - began
                remove(self.dir / "agent.url")
                delay = self.args.respawn_delay if ran > 10 else delay
                why = "restart requested" if self.agent.returncode == 75 else "it ended"
                log(f"agent {self.agent.pid} exited with status {self.agent.returncode} after "
                    f"{ran:.1f} s ({why}); starting it again in {delay:g} s")  # fmt: skip
                self.stopping.wait(delay)
                delay = min(delay * 2, self.args.respawn_max)

    def _reap_orphans(self) -> None:
        """Reap exited descendants adopted as subreaper (never our own Popen children)."""
        ours = {p.pid for p in (self.agent, self.daemon.proc if self.daemon else None) if p}
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None or found.si_pid in ours:
                return
            os.waitpid(found.si_pid, 0)

    # -- shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the agent, then libvirtd, then kill what is left of the host but us."""
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        if self.daemon is not None:
            self.daemon.stop()
        left = self._kill_rest()
        remove(self.dir / "agent.url")
        log(f"stopped; {len(left)} processes left in the host were killed")

    def _kill_rest(self) -> list[Any]:
        if self.cgroup is not None:
            return self.cgroup.kill_others(os.getpid())
        if "start" not in self.state:
            return []  # stopped while booting, before it started anything
        sid = self.state.get("sid")  # None: we lead no session, so only our tree is ours
        state = LauncherState(os.getpid(), -1 if sid is None else sid, self.state["start"])
        rest = [p for p in members_of(state, all_procs()) if p.pid != os.getpid()]
        for p in rest:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return rest


class TestHostProcess:
    """
    A test host launched as a child process, for tests and demos: the command line, the
    ``process`` power driver's options for it, waiting for its agent, and cleaning up.

    :param directory: the host's directory (short; see the module docstring).
    :param cgroup: its cgroup v2 path (None: tracked by session only).
    :param libvirt_uri: a libvirt URI instead of a session ``libvirtd`` (``test:///default``).
    :param embedded: an embedded QEMU root instead of a session ``libvirtd``.
    :param port: the agent's port (a free one by default).
    :param settings: agent settings, ``SECTION.KEY=VALUE``.
    """

    __test__ = False

    def __init__(
        self,
        directory: Path | str,
        *,
        cgroup: str | None = None,
        libvirt_uri: str | None = None,
        embedded: bool = False,
        port: int = 0,
        settings: tuple[str, ...] = (),
    ) -> None:
        self.dir = Path(directory).absolute()
        self.cgroup = cgroup
        self.libvirt_uri = libvirt_uri
        self.embedded = embedded
        self.port = port or free_port()
        self.settings = settings
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        """The launcher's command line (the power driver's start command too)."""
        argv = [sys.executable, "-m", "vdsmlike.testhost", "--dir", str(self.dir),
                "--port", str(self.port)]  # fmt: skip
        if self.cgroup:
            argv += ["--cgroup", self.cgroup]
        if self.libvirt_uri:
            argv += ["--libvirt-uri", self.libvirt_uri]
        elif self.embedded:
            argv.append("--embedded")
        for item in self.settings:
            argv += ["--set", item]
        return argv

    def power_options(self, **extra: Any) -> dict[str, Any]:
        """The ``process`` power driver's options for this host."""
        options: dict[str, Any] = {
            "state_file": str(self.dir / "testhost.json"), "start": self.argv(),
            "url_file": str(self.dir / "agent.url"), "start_log": str(self.dir / "testhost.log"),
        }  # fmt: skip
        if self.cgroup:
            options["cgroup"] = self.cgroup
        return {**options, **extra}

    def launch(self) -> None:
        """Start the launcher (returns at once; see :meth:`wait_url`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        remove(self.dir / "agent.url")
        with open(self.dir / "testhost.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip

    def url(self) -> str | None:
        """The agent's URL once it listens, else None."""
        try:
            return (self.dir / "agent.url").read_text().strip() or None
        except FileNotFoundError:
            return None

    def state(self) -> dict[str, Any]:
        """The launcher's ``testhost.json`` ({} before it is written)."""
        try:
            return json.loads((self.dir / "testhost.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    async def wait_url(self, reactor: Any, timeout: float = 60.0) -> str:
        """Wait until the agent listens. :returns: its URL."""
        from twisted.internet.task import deferLater

        deadline = time.monotonic() + timeout
        while (url := self.url()) is None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the test host exited ({self.proc.returncode}); see "
                                   f"{self.dir / 'testhost.log'}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test host's agent did not listen within {timeout} s")
            await deferLater(reactor, 0.05, lambda: None)
        return url

    def cleanup(self) -> None:
        """Kill whatever of the host still runs (BLOCKING) and remove its cgroup."""
        from engine.fence.session import SessionTracker, StateUnreadable

        group = None
        try:
            if self.cgroup:
                group = Cgroup(self.cgroup)
                group.kill()
            else:
                SessionTracker(str(self.dir / "testhost.json")).kill()
        except (CgroupUnavailable, StateUnreadable, OSError):
            pass
        if self.proc is not None:  # reap it: an unreaped zombie keeps its cgroup busy
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if group is not None:
            deadline = time.monotonic() + 10
            while group.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            group.remove(parent=True)  # the tests' common parent too, once empty


def main(argv: list[str] | None = None) -> int:
    """Boot the host and supervise it until SIGTERM or SIGINT. :returns: the exit status."""
    args = parse_args(argv)
    host = TestHost(args)
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda *_: host.stopping.set())
    try:
        uri = host.boot()
    except (CgroupUnavailable, OSError, LibvirtdError) as e:
        log(f"cannot boot: {e}")
        host.shutdown()
        return 3
    try:
        host.supervise(uri)
    finally:
        host.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
