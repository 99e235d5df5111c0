"""Test harness for the web console, end to end, without a reactor in the test process.

Playwright's sync API drives Debian's Chromium from the test thread; everything else runs in
child processes so nothing here needs Twisted's reactor:

- :class:`EngineProcess`: ``python -m engine.cli`` on a fixed free port (so a restarted engine
  comes back where the page expects it) with its embedded PostgreSQL in a state dir under
  ``/dev/shm``, fast monitoring settings, and an admin API client (``call``) over
  :func:`vdsmlike.client.call_sync` with the admin's token;
- :class:`AgentFleet`: agents (``vdsmlike.agentproc.AgentProcess``) on private libvirt
  test-driver hosts (16 GiB, 4 CPUs each);
- :func:`launch_browser`, :func:`log_in`, :func:`shot` (screenshots to ``artifacts/console``),
  :func:`wait_for` (poll a function until it accepts).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vdsmlike.agentproc import AgentProcess
from vdsmlike.client import RemoteError, call_sync

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: A laptop screen.
VIEWPORT = {"width": 1366, "height": 800}

#: Monitoring fast enough that live changes show within a second.
FAST_ENGINE = """\
[monitoring]
host_stats_interval = 0.5
vm_stats_interval = 0.5
heartbeat_interval = 0.3
heartbeat_timeout = 1
misses_to_suspect = 3
grace_period = 5
install_timeout = 10
connect_timeout = 3
call_timeout = 10
reconnect_initial_delay = 0.1
reconnect_max_delay = 0.5

[vms]
start_timeout = 20
stop_timeout = 20
shutdown_timeout = 20
pause_timeout = 20
migrate_timeout = 30
"""

TEST_NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>2</sockets><cores>2</cores><threads>1</threads>
       <active>4</active><mhz>2400</mhz><model>x86_64</model></cpu>
  <memory>16777216</memory>
</node>
"""


def wait_for(
    fetch: Callable[[], Any],
    accept: Callable[[Any], bool] = bool,
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """Call ``fetch`` until ``accept`` takes its value; :returns: that value.

    :raises AssertionError: after ``timeout`` seconds, with the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened; last value: {value!r}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scratch_dir(prefix: str) -> Path:
    """A fresh directory in memory when possible, reachable by the ``postgres`` user."""
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


class EngineProcess:
    """
    The engine daemon in a child process, with its own PostgreSQL in ``base/state``.

    :param config: extra INI text appended to :data:`FAST_ENGINE` (``[api] session_ttl``).
    """

    def __init__(self, base: Path, config: str = "") -> None:
        self.base = base
        self.state = base / "state"
        self.port = free_port()
        self.config_path = base / "engine.ini"
        self.config_path.write_text(FAST_ENGINE + config)
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.url = ""
        self._token: str | None = None

    @property
    def api_url(self) -> str:
        """The admin API's WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/api"

    @property
    def password(self) -> str:
        """The admin password the first start wrote."""
        return (self.state / "admin-password").read_text().strip()

    def start(self, timeout: float = 60.0) -> str:
        """Start and wait until the engine listens and has started; :returns: its URL."""
        (self.state / "engine.url").unlink(missing_ok=True)
        self.runs += 1
        log = open(self.base / f"engine{self.runs}.log", "wb")  # noqa: SIM115 - the child's
        argv = [
            sys.executable,
            "-m",
            "engine.cli",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state-dir",
            str(self.state),
            "--config",
            str(self.config_path),
        ]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        url_file = self.state / "engine.url"
        wait_for(
            lambda: (
                self.proc.poll() is not None or (url_file.exists() and url_file.read_text().strip())
            ),
            timeout=timeout,
            interval=0.05,
            what="the engine's start",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"the engine exited:\n{self.log()[-3000:]}")
        self.url = url_file.read_text().strip()
        return self.url

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); :returns: the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        """What the latest run logged."""
        path = self.base / f"engine{self.runs}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def token(self) -> str:
        """A session token of the admin (logged in once, over the API)."""
        if self._token is None:
            login = call_sync(
                self.api_url, "Auth.login", {"user": "admin", "password": self.password}
            )
            self._token = login["token"]
        return self._token

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> Any:
        """Call an admin API verb as the admin; :raises RemoteError: for an error answer."""
        return call_sync(self.api_url, method, params or {}, token=self.token(), timeout=timeout)

    def wait_host(self, host_id: str, status: str, timeout: float = 20.0) -> dict:
        """Wait until the host is in ``status``; :returns: the host."""
        return wait_for(
            lambda: self.call("Hosts.get", {"id": host_id}),
            lambda h: h["status"] == status,
            timeout=timeout,
            interval=0.2,
            what=f"host {host_id} {status}",
        )

    def wait_vm(self, vm_id: str, status: str, timeout: float = 20.0) -> dict:
        """Wait until the VM is in ``status``; :returns: the VM."""
        return wait_for(
            lambda: self.call("VMs.get", {"id": vm_id}),
            lambda v: v["status"] == status,
            timeout=timeout,
            interval=0.2,
            what=f"VM {vm_id} {status}",
        )

    def add_vm(self, name: str, **fields: Any) -> dict:
        """Define a VM (256 MiB unless said otherwise); :returns: it."""
        fields.setdefault("memory_mib", 256)
        return self.call("VMs.add", {"name": name, **fields})


class AgentFleet:
    """Agents in child processes, each on its own libvirt test-driver host."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.agents: dict[str, AgentProcess] = {}

    def start(self, *names: str, timeout: float = 60.0) -> dict[str, int]:
        """Start agents (in parallel); :returns: their ports by name."""
        for name in names:
            workdir = self.base / f"agent-{name}"
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "node.xml").write_text(TEST_NODE_XML)
            agent = AgentProcess(
                str(workdir),
                libvirt_uri=f"test://{workdir / 'node.xml'}",
                guest_wait_timeout=0.3,
                vm_sample_interval=0.5,
                host_sample_interval=0.5,
                mom={"enabled": "false"},
            )
            agent.launch()
            self.agents[name] = agent
        return {name: self.port(name, timeout) for name in names}

    def port(self, name: str, timeout: float = 60.0) -> int:
        """The port agent ``name`` listens on (waits until it does)."""
        agent = self.agents[name]
        url = wait_for(agent.url, timeout=timeout, interval=0.05, what=f"agent {name}")
        return int(url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self) -> None:
        """SIGTERM every agent and wait."""
        for agent in self.agents.values():
            proc = agent._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for agent in self.agents.values():
            proc = agent._proc
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def launch_browser(playwright: Any) -> Any:
    """Debian's Chromium under Playwright (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def log_in(page: Any, url: str, password: str, user: str = "admin") -> None:
    """Open the console and log in through its form; returns once the dashboard shows."""
    page.goto(url)
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard", level=1).wait_for()


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as ``artifacts/console/<name>.png``; :returns: its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def cleanup(path: Path) -> None:
    """Remove a scratch directory."""
    shutil.rmtree(path, ignore_errors=True)


__all__ = ["RemoteError", "wait_for"]
