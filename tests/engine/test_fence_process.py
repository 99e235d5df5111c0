"""The ``process`` power driver against real processes: a real cgroup v2 directory with real
sleeping children (status on, off with proof that each is gone, on again through a start
command), and the session fallback on a real launcher-like process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import LoopingCall, deferLater
from zope.interface.verify import verifyObject

from engine.fence.cgroup import Cgroup, find_cgroup2
from engine.fence.interfaces import IPowerDriver, IPowerDriverFactory
from engine.fence.process import ProcessPowerDriver
from engine.fence.procs import alive, read_proc
from engine.fence.result import Outcome, Power


@pytest.fixture
def cgroup():
    """A fresh cgroup v2 directory under vdsmlike-tests/, emptied and removed after."""
    if find_cgroup2() is None:
        pytest.skip("cgroup v2 is not mounted on this machine")
    group = Cgroup(f"vdsmlike-tests/fence-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        group.create()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup v2 directory here: {e}")
    yield group
    group.kill()
    deadline = time.monotonic() + 5
    while group.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    group.remove(parent=True)


class Children:
    """Child processes of the test, reaped at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        return proc

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def children():
    made = Children()
    yield made
    made.reap()


def sleepers_script(group: Cgroup, count: int) -> str:
    """A shell that enters ``group`` and leaves ``count`` sleeping processes there."""
    return (f"echo $$ > {group.path}/cgroup.procs; "
            + "sleep 300 & " * (count - 1) + "exec sleep 300")  # fmt: skip


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)
    return value


def driver(**options) -> ProcessPowerDriver:
    checked = ProcessPowerDriver.check_options({"poll_interval": 0.02, **options})
    return ProcessPowerDriver(checked, reactor=reactor)


def test_the_driver_provides_its_interfaces():
    """The class is the factory stevedore registers; its instances are drivers."""
    assert verifyObject(IPowerDriverFactory, ProcessPowerDriver)
    assert verifyObject(IPowerDriver, driver(cgroup="x"))


@pytest_twisted.ensureDeferred
async def test_status_lists_the_processes_of_a_running_host(cgroup, children):
    """Status is on while the cgroup has processes, and the proof names every one."""
    children.start(["sh", "-c", sleepers_script(cgroup, 3)])
    pids = await until(lambda: len(cgroup.pids()) == 3 and cgroup.pids(), what="3 sleepers")
    found = await driver(cgroup=str(cgroup.path)).status()
    assert (found.action, found.outcome, found.power) == ("status", Outcome.DONE, Power.ON)
    assert found.proof.startswith(f"cgroup {cgroup.path} has 3 processes: ")
    for pid in pids:
        assert f"sleep {pid}" in found.proof


@pytest_twisted.ensureDeferred
async def test_off_kills_every_process_and_proves_it(cgroup, children):
    """Off kills them all; done only once each killed process is gone from /proc; status is
    then off. The cgroup is thawed again for the next power-on."""
    shell = children.start(["sh", "-c", sleepers_script(cgroup, 4)])
    pids = await until(lambda: len(cgroup.pids()) == 4 and cgroup.pids(), what="4 sleepers")
    before = [read_proc(pid) for pid in pids]
    power = driver(cgroup=str(cgroup.path))
    off = await power.off()
    assert (off.action, off.outcome, off.power) == ("off", Outcome.DONE, Power.OFF), off
    assert f"cgroup {cgroup.path} has no processes left (was 4: " in off.proof
    assert all(f"sleep {pid}" in off.proof for pid in pids)
    assert not any(alive(p) for p in before if p is not None)
    assert shell.wait(5) == -9  # SIGKILL
    assert cgroup.pids() == []
    assert (cgroup.path / "cgroup.freeze").read_text().strip() == "0"
    status = await power.status()
    assert (status.power, status.proof) == (Power.OFF, f"cgroup {cgroup.path} has no processes")


@pytest_twisted.ensureDeferred
async def test_off_of_an_empty_or_missing_cgroup_is_already_off(cgroup):
    """Nothing to kill is off at once; a cgroup that does not exist has no processes either."""
    off = await driver(cgroup=str(cgroup.path)).off()
    assert (off.outcome, off.power, off.message) == (Outcome.DONE, Power.OFF,
                                                     "already off: nothing to kill")  # fmt: skip
    missing = await driver(cgroup=f"{cgroup.path}-missing").status()
    assert (missing.outcome, missing.power) == (Outcome.DONE, Power.OFF)


@pytest_twisted.ensureDeferred
async def test_a_cgroup_outside_the_hierarchy_is_unknown_not_off(cgroup):
    """A path that is no cgroup tells nothing about the host: unknown, and nothing is killed."""
    for action in ("status", "off", "on"):
        found = await getattr(driver(cgroup="/tmp/not-a-cgroup"), action)()
        assert (found.outcome, found.power) == (Outcome.UNKNOWN, Power.UNKNOWN), found
        assert "not a cgroup under" in found.proof


def start_script(group: Cgroup, url_file: Path, *, announce: bool) -> list[str]:
    """A start command: enters the cgroup, starts a child, writes the URL file (or not)."""
    code = textwrap.dedent(f"""
        import os, subprocess, time
        with open({str(group.path / "cgroup.procs")!r}, "w") as f:
            f.write(str(os.getpid()))
        subprocess.Popen(["sleep", "300"])
        time.sleep(0.3)
        if {announce!r}:
            with open({str(url_file)!r}, "w") as f:
                f.write("ws://127.0.0.1:1/jsonrpc\\n")
        time.sleep(300)
    """)
    return [sys.executable, "-c", code]


@pytest_twisted.ensureDeferred
async def test_on_runs_the_start_command_and_waits_for_the_agent(cgroup, tmp_path):
    """On removes the stale URL file, runs the start command, and is done once the cgroup has
    processes and the URL file is written; then off again."""
    url_file = tmp_path / "agent.url"
    url_file.write_text("ws://stale\n")
    power = driver(cgroup=str(cgroup.path), url_file=str(url_file),
                   start=start_script(cgroup, url_file, announce=True),
                   start_log=str(tmp_path / "start.log"))  # fmt: skip
    on = await power.on()
    assert (on.action, on.outcome, on.power) == ("on", Outcome.DONE, Power.ON), on
    assert f"the agent's URL file {url_file} says ws://127.0.0.1:1/jsonrpc" in on.proof
    assert "python" in on.proof and "sleep" in on.proof
    assert len(cgroup.pids()) == 2
    again = await power.on()
    assert (again.outcome, again.message) == (Outcome.DONE, "already on: not started again")
    assert len(cgroup.pids()) == 2  # nothing started twice
    off = await power.off()
    assert off.outcome is Outcome.DONE and not url_file.exists()


@pytest_twisted.ensureDeferred
async def test_on_without_an_announcement_fails_saying_power_is_on(cgroup, tmp_path):
    """Processes that never write the URL file: failed (not done), power on, with the reason;
    the reactor keeps running while the driver waits."""
    url_file = tmp_path / "agent.url"
    power = driver(cgroup=str(cgroup.path), url_file=str(url_file), start_timeout=1,
                   start=start_script(cgroup, url_file, announce=False))  # fmt: skip
    ticks = []
    loop = LoopingCall(lambda: ticks.append(1))
    loop.clock = reactor
    loop.start(0.05)
    try:
        on = await power.on()
    finally:
        loop.stop()
    assert (on.outcome, on.power) == (Outcome.FAILED, Power.ON), on
    assert f"{url_file} was not written within 1 s" in on.proof
    assert len(ticks) >= 10  # about 20 in 1 s: nothing blocked the reactor


@pytest_twisted.ensureDeferred
async def test_on_whose_start_command_fails_says_so(cgroup, tmp_path):
    """A start command that exits with an error and starts nothing: failed, power off."""
    power = driver(cgroup=str(cgroup.path), start=["sh", "-c", "echo broken; exit 3"],
                   start_log=str(tmp_path / "start.log"))  # fmt: skip
    on = await power.on()
    assert (on.outcome, on.power) == (Outcome.FAILED, Power.OFF), on
    assert "status 3" in on.message
    assert "broken" in (tmp_path / "start.log").read_text()
    nothing = await driver(cgroup=str(cgroup.path)).on()
    assert (nothing.outcome, nothing.message) == (
        Outcome.FAILED, "no start command is configured (option start)")  # fmt: skip


LAUNCHER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    os.setsid()
    with open(f"/proc/{os.getpid()}/stat") as f:
        start = int(f.read().rpartition(")")[2].split()[19])
    subprocess.Popen(["sleep", "300"])                         # in the session
    subprocess.Popen(["setsid", "sleep", "300"])               # leaves it, stays in the tree
    with open(sys.argv[1] + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "sid": os.getsid(0), "start": start}, f)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(300)
""")


@pytest_twisted.ensureDeferred
async def test_without_cgroup_the_launchers_session_and_tree_are_followed(tmp_path, children):
    """The fallback finds the launcher, its session and a child that left the session; off
    kills them all and proves it, saying it had no cgroup v2."""
    state = tmp_path / "testhost.json"
    launcher = children.start([sys.executable, "-c", LAUNCHER, str(state)])
    await until(state.exists, what="the state file")
    power = driver(state_file=str(state))
    # Until ``setsid`` has exec'd, its child is named setsid rather than sleep.
    for _ in range(100):
        status = await power.status()
        if status.proof.count("sleep ") == 2:
            break
        await deferLater(reactor, 0.02, lambda: None)
    assert (status.outcome, status.power) == (Outcome.DONE, Power.ON), status
    assert "(no cgroup v2)" in status.proof
    assert status.proof.count("sleep ") == 2 and f" {launcher.pid}" in status.proof
    off = await power.off()
    assert (off.outcome, off.power) == (Outcome.DONE, Power.OFF), off
    assert "has no processes left (was 3: " in off.proof
    assert launcher.wait(5) == -9
    after = await power.status()
    assert after.power is Power.OFF


@pytest_twisted.ensureDeferred
async def test_an_unreadable_state_file_is_unknown(tmp_path):
    """Without the launcher's state the fallback cannot tell: unknown, nothing killed."""
    (tmp_path / "testhost.json").write_text(json.dumps({"pid": "x"}))
    for action in ("status", "off"):
        found = await getattr(driver(state_file=str(tmp_path / "testhost.json")), action)()
        assert (found.outcome, found.power) == (Outcome.UNKNOWN, Power.UNKNOWN), found
        assert "cannot read the launcher's state file" in found.proof
