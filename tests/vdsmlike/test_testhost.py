"""The test-host launcher (``python -m vdsmlike.testhost``) and the session-libvirtd helper:
their pure parts, and real launchers with their cgroup, a real agent child process restarted
on ``Host.restart`` and after a crash, the session fallback, and a session ``libvirtd`` run as
an unprivileged user."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from engine.fence.cgroup import Cgroup, find_cgroup2
from engine.fence.procs import read_proc
from engine.fence.session import SessionTracker
from vdsmlike import client as agent_client
from vdsmlike.libvirtd import (
    LibvirtdError,
    SessionLibvirtd,
    check_base,
    config_files,
    session_env,
    session_uri,
)
from vdsmlike.testhost import AGENT_DEFAULTS, TestHostProcess, agent_config

# -- pure -------------------------------------------------------------------------------------


def test_agent_config_has_defaults_and_takes_overrides():
    """The agent's INI has the launcher's defaults, each overridable, sections grouped."""
    text = agent_config(["vars.vm_sample_interval=0.5", "rpc.validate_results = true"])
    assert "[vars]\ndomain_type = qemu\nvm_sample_interval = 0.5\n" in text
    assert "[mom]\nenabled = false\n" in text and "[rpc]\nvalidate_results = true\n" in text
    assert agent_config([]).count("[") == len({k.split(".")[0] for k in AGENT_DEFAULTS})
    for bad in ("vm_sample_interval=1", "vars.x"):
        with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
            agent_config([bad])


def test_session_daemon_files_environment_and_uri():
    """Each daemon gets its own host UUID and port range, XDG dirs under its base, a URI
    naming its socket; a base too long for a unix socket is refused."""
    files = config_files(host_uuid="u-1", migration_ports=(49152, 49167))
    assert files["cfg/libvirt/libvirtd.conf"] == 'host_uuid = "u-1"\n'
    assert files["cfg/libvirt/qemu.conf"] == (
        'stdio_handler = "file"\nmigration_port_min = 49152\nmigration_port_max = 49167\n'
    )
    assert "migration_port" not in config_files(host_uuid="u-2")["cfg/libvirt/qemu.conf"]
    env = session_env("/tmp/h1")
    assert env["XDG_RUNTIME_DIR"] == "/tmp/h1/run" and env["HOME"] == "/tmp/h1"
    assert session_uri("/tmp/h1") == (
        "qemu+unix:///session?socket=/tmp/h1/run/libvirt/libvirt-sock"
    )
    check_base("/tmp/h1")
    with pytest.raises(LibvirtdError, match="over the 107"):
        check_base("/tmp/" + "x" * 90)


# -- real launchers ---------------------------------------------------------------------------


@pytest.fixture
def hosts():
    """Launch test hosts; everything left of them is killed, their dirs removed, after."""
    made: list[TestHostProcess] = []

    def launch(*, cgroup: bool = True, **kwargs) -> TestHostProcess:
        if cgroup and find_cgroup2() is None:
            pytest.skip("cgroup v2 is not mounted on this machine")
        directory = Path(tempfile.mkdtemp(prefix="vlh-", dir="/tmp"))
        name = f"vdsmlike-tests/th-{uuid.uuid4().hex[:8]}" if cgroup else None
        host = TestHostProcess(directory, cgroup=name, **kwargs)
        host.launch()
        made.append(host)
        return host

    yield launch
    for host in made:
        host.cleanup()
        shutil.rmtree(host.dir, ignore_errors=True)


async def until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)
    return value


async def capabilities(url: str) -> dict:
    """Ask the agent at ``url`` for its capabilities (retrying while it starts)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            client = await agent_client.connect(reactor, url, timeout=5)
            try:
                return await client.call("Host.getCapabilities", timeout=10)
            finally:
                await client.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await deferLater(reactor, 0.1, lambda: None)


async def stop(host: TestHostProcess, timeout: float = 30) -> int:
    """SIGTERM the launcher; :returns: its exit status."""
    host.proc.send_signal(signal.SIGTERM)
    await until(lambda: host.proc.poll() is not None, timeout, "the launcher to exit")
    return host.proc.returncode


@pytest_twisted.ensureDeferred
async def test_launcher_runs_its_agent_in_its_cgroup_and_restarts_it(hosts):
    """The launcher and its agent are in the cgroup; Host.restart makes the agent exit 75 and
    the launcher starts a new instance on the same port; so does a crash; SIGTERM stops the
    host whole, leaving the cgroup empty and no URL behind."""
    host = hosts(libvirt_uri="test:///default")
    url = await host.wait_url(reactor)
    assert url == f"ws://127.0.0.1:{host.port}/jsonrpc"
    state = host.state()
    assert (state["mode"], state["pid"], state["sid"]) == ("cgroup", host.proc.pid, host.proc.pid)
    group = Cgroup(host.cgroup)
    assert {state["pid"], state["agent_pid"]} <= set(group.pids())
    first = (await capabilities(url))["agentInstance"]

    client = await agent_client.connect(reactor, url)
    answer = await client.call("Host.restart", {"delay": 0.1})
    assert answer == {"instance": first, "delay": 0.1, "exitStatus": 75}
    await until(lambda: host.state()["agent_starts"] == 2, what="a second agent")
    second = (await capabilities(await host.wait_url(reactor)))["agentInstance"]
    assert second != first and host.state()["port"] == host.port
    log = (host.dir / "testhost.log").read_text()
    assert "exited with status 75" in log and "(restart requested)" in log

    os.kill(host.state()["agent_pid"], signal.SIGKILL)
    await until(lambda: host.state()["agent_starts"] == 3, what="the agent after a crash")
    assert "exited with status -9" in (host.dir / "testhost.log").read_text()
    await capabilities(await host.wait_url(reactor))

    assert await stop(host) == 0
    assert group.pids() == [] and host.url() is None


@pytest_twisted.ensureDeferred
async def test_without_cgroup_the_launcher_leads_a_session_the_fallback_follows(hosts):
    """Without --cgroup the launcher leads its own session and says so; the fallback tracker
    finds it and its agent; SIGTERM stops them."""
    host = hosts(cgroup=False, libvirt_uri="test:///default")
    await host.wait_url(reactor)
    state = host.state()
    assert state["mode"] == "session" and state["sid"] == state["pid"] == host.proc.pid
    members = SessionTracker(str(host.dir / "testhost.json")).members()
    assert {state["pid"], state["agent_pid"]} <= {p.pid for p in members}
    assert os.getpid() not in {p.pid for p in members}
    assert await stop(host) == 0
    assert read_proc(state["agent_pid"]) is None or read_proc(state["agent_pid"]).zombie


def test_an_unusable_cgroup_stops_the_launcher_when_required(tmp_path):
    """--require-cgroup with a path outside the hierarchy: exit 3 and say why."""
    done = subprocess.run(
        [sys.executable, "-m", "vdsmlike.testhost", "--dir", str(tmp_path / "h"),
         "--cgroup", "../../escape", "--require-cgroup", "--libvirt-uri", "test:///default"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot boot" in done.stdout


@pytest_twisted.ensureDeferred
async def test_a_session_libvirtd_runs_as_the_unprivileged_user_inside_the_host(hosts):
    """With a session libvirtd (the default), the daemon runs as its own user inside the
    host's cgroup, the agent talks to it, and SIGTERM stops both."""
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed")
    if os.geteuid() != 0:
        pytest.skip("running libvirtd as another user needs root")
    host = hosts()
    url = await host.wait_url(reactor, timeout=90)
    uri = host.state()["uri"]
    assert uri == session_uri(host.dir / "lv")
    caps = await capabilities(url)
    assert caps["libvirtUri"] == uri
    daemons = [p for p in Cgroup(host.cgroup).members() if p.name == "libvirtd"]
    assert len(daemons) == 1
    owner = os.stat(f"/proc/{daemons[0].pid}").st_uid
    assert owner == SessionLibvirtd(host.dir / "lv").owner()[0] != 0
    assert await stop(host) == 0
    assert Cgroup(host.cgroup).pids() == []
