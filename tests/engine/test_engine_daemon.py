"""The ``vdsmlike-engine`` daemon end to end (a child process with its embedded PostgreSQL),
its configuration, and its service tree's site.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import pytest_twisted
from engine_harness import start_engine
from pg_harness import TEST_SETTINGS, scratch_dir, unavailable
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from engine.config import ConfigError, EngineConfig, check, load_config, read_ini
from engine.store.cluster import PostgresCluster, find_server_binaries
from engine.store.postgres import PostgresStore


class Daemon:
    """``python -m engine.cli`` in a child process, its output in files."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> None:
        """Launch (returns at once); a stale URL file is removed first."""
        (self.state / "engine.url").unlink(missing_ok=True)
        self.runs += 1
        out = open(self.state.parent / f"out{self.runs}.txt", "wb")  # noqa: SIM115
        err = open(self.state.parent / f"err{self.runs}.txt", "wb")  # noqa: SIM115
        argv = [sys.executable, "-m", "engine.cli", "--listen", "127.0.0.1:0",
                "--state-dir", str(self.state), *self.args]
        self.proc = subprocess.Popen(argv, stdout=out, stderr=err)
        out.close()
        err.close()

    def output(self) -> str:
        """What the latest run printed to stdout."""
        return (self.state.parent / f"out{self.runs}.txt").read_text()

    def log(self) -> str:
        """What the latest run logged (stderr)."""
        return (self.state.parent / f"err{self.runs}.txt").read_text()

    async def url(self, timeout: float = 90.0) -> str:
        """Wait until the engine wrote its URL; :returns: it."""
        deadline = time.monotonic() + timeout
        path = self.state / "engine.url"
        while not path.exists() or not path.read_text().strip():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the engine did not start:\n{self.log()[-3000:]}")
            await deferLater(reactor, 0.1, lambda: None)
        return path.read_text().strip()

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; :returns: the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
            await deferLater(reactor, 0.1, lambda: None)
        return self.proc.returncode


@pytest_twisted.async_yield_fixture
async def scratch():
    """A short directory the ``postgres`` user can enter (for the embedded cluster); a server
    left running in it (the daemon was killed) is stopped after the test."""
    if find_server_binaries() is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    path = scratch_dir("vl-eng-")
    yield path
    await PostgresCluster(path / "state", reactor=reactor).stop()
    shutil.rmtree(path, ignore_errors=True)


def fetch(url: str) -> int:
    """:returns: the HTTP status of GET ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest_twisted.ensureDeferred
async def test_daemon_end_to_end(scratch):
    """Started with nothing but a state dir and port 0, the daemon runs its own PostgreSQL,
    writes its URL, answers HTTP there (logging no query string: a token may be in it), creates
    the admin account and prints its password once (also in a 0600 file); stopped and started
    again, it keeps the account and prints nothing."""
    state = scratch / "state"
    daemon = Daemon(state)
    daemon.start()
    url = await daemon.url()
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
    assert await deferToThread(fetch, url) in (200, 404)
    await deferToThread(fetch, url + "?token=sekrit-in-query")
    printed = daemon.output()
    assert "password" in printed
    secret = (state / "admin-password").read_text().strip()
    assert secret and secret in printed
    assert (state / "admin-password").stat().st_mode & 0o777 == 0o600
    cluster = PostgresCluster(state, reactor=reactor)
    store = PostgresStore(cluster.dsn("vdsmlike"), reactor=reactor, settings=TEST_SETTINGS)
    await store.start(migrate=False)
    try:
        assert (await store.verify_password("admin", secret)).name == "admin"
        assert [e.type for e in await store.list_events(event_type="ENGINE_STARTED")]
    finally:
        store.close()
    assert await daemon.stop() == 0
    assert not await cluster.running()
    assert '"GET / HTTP/1.1"' in daemon.log() and "sekrit-in-query" not in daemon.log()

    daemon.start()
    again = await daemon.url()
    assert again.startswith("http://127.0.0.1:")
    assert "password" not in daemon.output()
    assert (state / "admin-password").read_text().strip() == secret
    assert await daemon.stop() == 0


def test_bad_command_line():
    """A bad --listen is refused with exit status 2 and a message naming it."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "--listen", "nowhere"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "listen" in done.stderr


def test_config_from_file_and_flags(tmp_path):
    """The INI file sets every section's values, policy parameters keep oVirt's case, and
    command-line flags win over the file."""
    path = tmp_path / "engine.conf"
    path.write_text(
        "[engine]\nlisten = 0.0.0.0:9000\ndb = host=/tmp dbname=x\npool_size = 7\n"
        "[monitoring]\nvm_stats_interval = 2.5\ngrace_period = 9\n"
        "[scheduling]\npolicy = evenly_distributed\nmemory_over_commit = 150\n"
        "[policy_parameters]\nHighUtilization = 70\n[vms]\nstart_timeout = 30\n"
    )
    config = load_config(["--config", str(path), "--listen", "127.0.0.1:0",
                          "--state-dir", str(tmp_path / "s")])
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    assert config.db == "host=/tmp dbname=x" and config.pool_size == 7
    assert config.vm_stats_interval == 2.5 and config.timing.grace_period == 9
    assert config.start_timeout == 30
    policy = config.scheduling_policy()
    assert policy.name == "evenly_distributed"
    assert policy.parameters.high_utilization == 70
    assert policy.memory_over_commit_percent == 150
    assert config.state_dir == str(tmp_path / "s")
    assert config.url_file == os.path.join(config.state_dir, "engine.url")


def test_config_defaults_and_errors():
    """The defaults are the issue's (port 8080, the system state dir, 5 s polls) and bad
    settings are refused naming the setting."""
    config = EngineConfig()
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert config.state_dir == "/var/lib/vdsmlike-engine" and config.db is None
    assert config.host_stats_interval == 5 and config.vm_stats_interval == 5
    for text, word in (("[engine]\ncolour = red\n", "colour"),
                       ("[monitoring]\ngrace_period = soon\n", "grace_period"),
                       ("[engine]\nlisten = 1.2.3.4\n", "listen")):
        with pytest.raises(ConfigError, match=word):
            read_ini(text)
    with pytest.raises(ConfigError, match="HighUtilization"):
        check(read_ini("[policy_parameters]\nHighUtilization = 5\n"))
    with pytest.raises(ConfigError, match="unknown cluster policy"):
        check(read_ini("[scheduling]\npolicy = random\n"))


@pytest_twisted.ensureDeferred
async def test_site_serves_the_api(tmp_path, pg_dsn):
    """The service tree's site listens where engine.url says and mounts the admin API at
    /api (a WebSocket resource: a plain GET there is not a 404)."""
    running = await start_engine(tmp_path, pg_dsn)
    try:
        written = (Path(running.config.state_dir) / "engine.url").read_text().strip()
        assert written == running.url
        status = await deferToThread(fetch, running.url + "api")
        assert status != 404
        assert "password" in running.out.getvalue()
    finally:
        await running.stop()
