"""Real daemons in child processes (``vdsmlike-agent``, ``vdsmlike-engine``), for the demo,
benchmarks and end-to-end tests: start one, find its URL, stop it with SIGTERM as an init
system would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from twisted.internet.task import deferLater


class DaemonProcess:
    """
    A daemon in a child process that writes its URL to ``<state_dir>/<url_name>`` once it
    listens; subclasses give the command line (:meth:`argv`).

    :param workdir: where the child's files go (its log, its config).
    :param detach: start the child in a session of its own, so that a Ctrl-C meant for the
        parent does not reach it (the parent stops it in order instead).
    """

    url_name = "daemon.url"
    log_name = "daemon.log"
    what = "daemon"

    def __init__(self, workdir: str, state_dir: str, *, detach: bool = False) -> None:
        self.workdir = workdir
        self.state_dir = state_dir
        self.detach = detach
        self.log_path = os.path.join(workdir, self.log_name)
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def argv(self) -> list[str]:
        """The child's command line."""
        raise NotImplementedError

    def launch(self) -> None:
        """Start the process (returns at once); a stale URL file is removed first."""
        os.makedirs(self.state_dir, exist_ok=True)
        url_file = os.path.join(self.state_dir, self.url_name)
        if os.path.exists(url_file):
            os.unlink(url_file)
        argv = self.argv()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self._proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=self.detach
        )
        log.close()

    def url(self) -> str | None:
        """The URL the daemon wrote once listening, or None yet."""
        try:
            with open(os.path.join(self.state_dir, self.url_name), encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def running(self) -> bool:
        """:returns: whether the child was launched and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    async def start(self, reactor, timeout: float = 60.0) -> str:
        """Launch and wait until the daemon listens. :returns: its URL."""
        self.launch()
        deadline = time.monotonic() + timeout
        while (url := self.url()) is None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} did not start; see {self.log_path}")
            await deferLater(reactor, 0.05, lambda: None)
        return url

    async def stop(self, reactor, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit (SIGKILL after ``timeout``). :returns: the status."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None:
            if time.monotonic() > deadline:
                self._proc.kill()
            await deferLater(reactor, 0.05, lambda: None)
        return self._proc.returncode


class AgentProcess(DaemonProcess):
    """
    One agent daemon in a child process, configured through an INI file in ``workdir``.

    :param settings: ``[vars]`` settings (e.g. ``vm_sample_interval=1.0``).
    :param mom: ``[mom]`` settings (e.g. ``{"policy_interval": 1}``).
    """

    url_name = "agent.url"
    log_name = "agent.log"
    what = "agent"

    def __init__(
        self,
        workdir: str,
        *,
        libvirt_uri: str,
        token: str | None = None,
        validate_results: bool = False,
        mom: dict | None = None,
        detach: bool = False,
        **settings,
    ):
        super().__init__(workdir, os.path.join(workdir, "state"), detach=detach)
        self.libvirt_uri = libvirt_uri
        self.token = token
        self.settings = settings
        self.validate_results = validate_results
        self.mom = mom or {}

    def _write_config(self) -> str:
        path = os.path.join(self.workdir, "agent.conf")
        lines = ["[vars]"] + [f"{k} = {v}" for k, v in self.settings.items()]
        lines += ["[rpc]", f"validate_results = {str(self.validate_results).lower()}"]
        if self.token:
            lines += ["[auth]", f"token = {self.token}"]
        if self.mom:
            lines += ["[mom]"] + [f"{k} = {v}" for k, v in self.mom.items()]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "vdsmlike.cli.agent",
            "--config",
            self._write_config(),
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            self.state_dir,
            "--libvirt-uri",
            self.libvirt_uri,
        ]


class EngineProcess(DaemonProcess):
    """
    The ``vdsmlike-engine`` daemon in a child process; its state dir is ``<workdir>/state``.

    :param listen: ``HOST:PORT`` (port 0 picks one).
    :param db: a PostgreSQL DSN, or None for the engine's embedded cluster in its state dir.
    :param args: more command-line arguments (e.g. ``--config FILE``).
    """

    url_name = "engine.url"
    log_name = "engine.log"
    what = "engine"

    def __init__(
        self,
        workdir: str,
        *,
        listen: str = "127.0.0.1:0",
        db: str | None = None,
        args: tuple[str, ...] = (),
        detach: bool = False,
    ) -> None:
        super().__init__(workdir, os.path.join(workdir, "state"), detach=detach)
        self.listen = listen
        self.db = db
        self.args = args

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "engine.cli", "--listen", self.listen]
        argv += ["--state-dir", self.state_dir, *self.args]
        return argv + (["--db", self.db] if self.db else [])

    def admin_password(self) -> str | None:
        """The admin password the first start wrote (mode 0600), or None."""
        try:
            with open(os.path.join(self.state_dir, "admin-password"), encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None


def kill_guests_under(path: str) -> list[int]:
    """
    SIGKILL every QEMU whose command line mentions ``path`` (an embedded root or a work dir):
    stopping an agent leaves its VMs running, by design, so whoever made the root cleans up.

    :returns: the pids killed.
    """
    killed = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and path.encode() in b" ".join(argv):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(int(pid))
    return killed


async def connect_when_ready(reactor, url: str, *, token: str | None = None, timeout: float = 60.0):
    """
    Connect to an agent and wait until it has recovered its VMs (verbs stop answering 99).

    :returns: the connected :class:`vdsmlike.client.AgentClient`.
    """
    from .api.errors import Recovering
    from .client import RemoteError, connect

    client = await connect(reactor, url, token=token)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.call("Host.ping2")
            return client
        except RemoteError as e:
            if e.code != Recovering.code or time.monotonic() > deadline:
                raise
        await deferLater(reactor, 0.1, lambda: None)
