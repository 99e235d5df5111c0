"""``vdsmlike-client`` against the engine's admin API: log in with a password file or a token,
call verbs, see errors (with their data), and watch live notifications."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from api_harness import ADMIN, PASSWORD, FakeEngine, start_api, until
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

from engine.store.auditlog import AuditType
from vdsmlike.cli.client import is_engine, read_password

REPO = str(Path(__file__).resolve().parents[2])


@pytest_twisted.async_yield_fixture
async def api(store):
    """The API on a ``FakeEngine`` and the real store."""
    server = await start_api(FakeEngine(), store)
    yield server
    await server.stop()


def cli_env(tmp_path):
    """The CLI's environment: no VDSMLIKE_* variables from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDSMLIKE_")}
    env.update({"VDSMLIKE_STATE_DIR": str(tmp_path), "PYTHONPATH": REPO})
    return env


async def run_cli(tmp_path, *args):
    """Run ``vdsmlike-client``; :returns: (stdout, stderr, exit status)."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "vdsmlike.cli.client", *args], env=cli_env(tmp_path), path=REPO
    )
    return out.decode(), err.decode(), code


def password_file(tmp_path, password=PASSWORD):
    """A password file (with a trailing line break, as editors write them)."""
    path = tmp_path / "password"
    path.write_text(password + "\n")
    return str(path)


@pytest_twisted.ensureDeferred
async def test_login_with_a_password_file(api, tmp_path):
    """--user and --password-file log in, then the verb's result is printed as JSON."""
    client = await api.login()
    await client.call("Hosts.add", {"name": "host1", "address": "h1"})
    out, err, code = await run_cli(
        tmp_path, "--url", api.url, "--user", ADMIN, "--password-file", password_file(tmp_path),
        "Hosts.list",
    )
    assert code == 0, err
    assert [h["name"] for h in json.loads(out)] == ["host1"]
    out, err, code = await run_cli(
        tmp_path, "--url", api.url, "--user", ADMIN, "--password-file", password_file(tmp_path),
        "VMs.add", "name=web1", "memory_mib=128",
    )
    assert code == 0 and json.loads(out)["memory_mib"] == 128, err


@pytest_twisted.ensureDeferred
async def test_token(api, tmp_path):
    """--token authenticates with an earlier session's token."""
    token = (await api.login()).token
    out, err, code = await run_cli(tmp_path, "--url", api.url, "--token", token, "VMs.list")
    assert (code, json.loads(out)) == (0, []), err


@pytest_twisted.ensureDeferred
async def test_errors(api, tmp_path):
    """A wrong password, no login, and a refused start exit 1 with the error (and its data)."""
    wrong = password_file(tmp_path, "guess")
    out, err, code = await run_cli(
        tmp_path, "--url", api.url, "--user", ADMIN, "--password-file", wrong, "Hosts.list"
    )
    assert code == 1 and out == "" and "error 403: Login failed" in err
    _, err, code = await run_cli(tmp_path, "--url", api.url, "Hosts.list")
    assert code == 1 and "error 401: Not authenticated" in err and '"login_required"' in err
    client = await api.login()
    await client.call("Hosts.add", {"name": "host1", "address": "h1"})
    vm = await client.call("VMs.add", {"name": "huge", "memory_mib": 100000})
    _, err, code = await run_cli(
        tmp_path, "--url", api.url, "--token", client.token, "VMs.start", f"id={vm['id']}"
    )
    assert code == 1 and "error 4092: Action refused" in err
    data = json.loads(err[err.index("{"):])
    assert data["hosts"][0]["name"] == "host1"
    assert data["hosts"][0]["reasons"][0].startswith("refused by memory")


class _Lines(ProcessProtocol):
    """Collects a process's stdout as JSON lines."""

    def __init__(self):
        self.lines = defer.DeferredQueue()
        self.buffer = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.put(json.loads(line))

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.ensureDeferred
async def test_events(api, tmp_path):
    """--events on the engine subscribes with Engine.subscribe and prints notifications."""
    proto = _Lines()
    reactor.spawnProcess(
        proto, sys.executable,
        [sys.executable, "-m", "vdsmlike.cli.client", "--url", api.url, "--user", ADMIN,
         "--password-file", password_file(tmp_path), "--events", "|engine|event|*"],
        env=cli_env(tmp_path), path=REPO,
    )
    try:
        await until(lambda: any(api.factory.bus.patterns(p) for p in api.protocols), 20,
                    "the CLI's subscription")
        event = api.engine.record(AuditType.ENGINE_STARTED)
        line = await proto.lines.get()
        while line["event"] != f"|engine|event|{event.id}":  # its own login comes first
            line = await proto.lines.get()
        assert line["params"]["event"]["message"] == "Engine started"
    finally:
        proto.transport.signalProcess("INT")
    assert await proto.ended == 0


def test_read_password(tmp_path, monkeypatch):
    """The password comes from the file's first line, else $VDSMLIKE_PASSWORD."""
    path = tmp_path / "pw"
    path.write_text("s3cret\r\nignored\n")
    assert read_password(str(path), {}) == "s3cret"
    assert read_password(None, {"VDSMLIKE_PASSWORD": "env"}) == "env"
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(ValueError):
        read_password(None, {})


def test_is_engine():
    """An engine is a /api URL or a login; an agent's /jsonrpc URL is not."""
    assert is_engine("ws://127.0.0.1:8080/api", None)
    assert is_engine("ws://127.0.0.1:8080/api/", None)
    assert is_engine("ws://h/x", "admin")
    assert not is_engine("ws://127.0.0.1:54321/jsonrpc", None)
