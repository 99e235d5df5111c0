"""A real ``vdsmlike-agent`` daemon in a child process, for benchmarks and end-to-end tests:
start it, find its URL, stop it with SIGTERM as an init system would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from twisted.internet.task import deferLater


class AgentProcess:
    """
    One agent daemon in a child process, configured through an INI file in ``workdir``.

    :param settings: ``[vars]`` settings (e.g. ``vm_sample_interval=1.0``).
    :param mom: ``[mom]`` settings (e.g. ``{"policy_interval": 1}``).
    """

    def __init__(
        self,
        workdir: str,
        *,
        libvirt_uri: str,
        token: str | None = None,
        validate_results: bool = False,
        mom: dict | None = None,
        **settings,
    ):
        self.workdir = workdir
        self.state_dir = os.path.join(workdir, "state")
        self.libvirt_uri = libvirt_uri
        self.token = token
        self.settings = settings
        self.validate_results = validate_results
        self.mom = mom or {}
        self.log_path = os.path.join(workdir, "agent.log")
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

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

    def launch(self) -> None:
        """Start the process (returns at once)."""
        os.makedirs(self.state_dir, exist_ok=True)
        url_file = os.path.join(self.state_dir, "agent.url")
        if os.path.exists(url_file):
            os.unlink(url_file)
        argv = [
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
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def url(self) -> str | None:
        """The URL the agent wrote once listening, or None yet."""
        try:
            with open(os.path.join(self.state_dir, "agent.url"), encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    async def start(self, reactor, timeout: float = 60.0) -> str:
        """Launch and wait until the agent listens. :returns: its URL."""
        self.launch()
        deadline = time.monotonic() + timeout
        while (url := self.url()) is None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start; see {self.log_path}")
            await deferLater(reactor, 0.05, lambda: None)
        return url

    async def stop(self, reactor, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit. :returns: the exit status."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None:
            if time.monotonic() > deadline:
                self._proc.kill()
            await deferLater(reactor, 0.05, lambda: None)
        return self._proc.returncode


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
