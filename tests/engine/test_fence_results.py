"""Fencing's pure parts: results and their proof, /proc and /proc/mounts parsing, the session
fallback's choice of processes, the process driver's options, agent choice and API shapes."""

from __future__ import annotations

import uuid

import pytest

from engine.fence import result as fr
from engine.fence import wire
from engine.fence.actions import default_agent, proven_off
from engine.fence.cgroup import CgroupUnavailable, cgroup2_mount, resolve
from engine.fence.process import check_options
from engine.fence.procs import Proc, describe, parse_stat
from engine.fence.result import AgentInstance, FenceAction, Outcome, Power
from engine.fence.session import LauncherState, members_of
from engine.store.rows import HostPowerManagement

WHERE = "cgroup /sys/fs/cgroup/unified/vl/h1"


def proc(pid: int, name: str = "qemu", *, ppid: int = 1, sid: int = 1, start: int = 100,
         state: str = "S") -> Proc:  # fmt: skip
    return Proc(pid=pid, name=name, state=state, ppid=ppid, sid=sid, start=start)


# -- /proc ------------------------------------------------------------------------------------

STAT = ("4242 (qemu-system-x86) S 4200 4242 4100 0 -1 4194560 5 0 0 0 1 2 0 0 20 0 3 0 "
        "987654 1000 200 18446744073709551615")  # fmt: skip


def test_parse_stat_reads_identity_and_family():
    """A stat line gives pid, name, state, parent, session and start time (field 22)."""
    assert parse_stat(STAT) == Proc(4242, "qemu-system-x86", "S", 4200, 4100, 987654)


def test_parse_stat_survives_parentheses_and_spaces_in_the_name():
    """The name is taken up to the last closing parenthesis, whatever it holds."""
    line = STAT.replace("(qemu-system-x86)", "(a) b (c)")
    assert parse_stat(line).name == "a) b (c"
    assert parse_stat(line).start == 987654


def test_parse_stat_refuses_junk():
    """Text that is no stat line is a ValueError, not a wrong process."""
    with pytest.raises(ValueError):
        parse_stat("4242 qemu S 1")


def test_describe_sorts_by_pid_and_counts_the_rest():
    """Processes are listed as "name pid" by pid, the ones past the limit as a count."""
    procs = [proc(30, "c"), proc(10, "a"), proc(20, "b")]
    assert describe(procs) == "a 10, b 20, c 30"
    assert describe(procs, limit=2) == "a 10, b 20 and 1 more"
    assert describe([]) == "none"


def test_zombies_are_dead():
    """A process that exited and waits to be reaped counts as dead."""
    assert proc(1, state="Z").zombie and not proc(1, state="D").zombie


# -- cgroup v2 mount and paths ----------------------------------------------------------------

MOUNTS = """tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""


def test_cgroup2_mount_is_found_among_v1_hierarchies():
    """On a hybrid machine the v2 hierarchy is the cgroup2 line, not /sys/fs/cgroup."""
    assert cgroup2_mount(MOUNTS) == "/sys/fs/cgroup/unified"
    assert cgroup2_mount("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n") == "/sys/fs/cgroup"
    assert cgroup2_mount("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n") is None


def test_cgroup2_mount_unescapes_spaces():
    """/proc/mounts writes a space in a mount point as \\040."""
    assert cgroup2_mount("none /mnt/my\\040cg cgroup2 rw 0 0\n") == "/mnt/my cg"


def test_cgroup_paths_stay_under_the_mount():
    """Relative paths are taken from the mount; absolute ones and .. may not leave it."""
    mount = "/sys/fs/cgroup/unified"
    assert str(resolve("vl/h1", mount)) == f"{mount}/vl/h1"
    assert str(resolve(f"{mount}/vl/h1", mount)) == f"{mount}/vl/h1"
    for bad in ("/tmp/h1", "../../etc", f"{mount}/../memory/x"):
        with pytest.raises(CgroupUnavailable):
            resolve(bad, mount)


# -- the session fallback ---------------------------------------------------------------------


def test_members_are_the_session_and_the_launchers_tree():
    """The launcher's session, plus descendants that left it (a daemon's setsid), but not
    strangers, nor a process that merely reuses the launcher's pid."""
    state = LauncherState(pid=100, sid=100, start=5)
    procs = [
        proc(100, "testhost", ppid=1, sid=100, start=5),
        proc(101, "libvirtd", ppid=100, sid=100),
        proc(102, "qemu", ppid=101, sid=102),  # left the session, still in the tree
        proc(103, "qemu-child", ppid=102, sid=102),
        proc(200, "stranger", ppid=1, sid=200),
    ]
    assert [p.pid for p in members_of(state, procs)] == [100, 101, 102, 103]
    reused = [proc(100, "other", sid=300, start=999), proc(102, "qemu", ppid=100, sid=102)]
    assert members_of(state, reused) == []


def test_a_launcher_leading_no_session_counts_only_its_tree():
    """Without a session of its own (sid -1) the launcher's session mates are not its own."""
    state = LauncherState(pid=100, sid=-1, start=5)
    procs = [proc(100, ppid=50, sid=50, start=5), proc(101, ppid=100, sid=50),
             proc(50, "pytest", sid=50)]  # fmt: skip
    assert [p.pid for p in members_of(state, procs)] == [100, 101]


# -- results ----------------------------------------------------------------------------------


def test_status_is_what_the_processes_say():
    """Processes present: on, with the list; none: off."""
    on = fr.status_result(WHERE, [proc(7, "libvirtd"), proc(9, "qemu")])
    assert (on.outcome, on.power) == (Outcome.DONE, Power.ON)
    assert on.proof == f"{WHERE} has 2 processes: libvirtd 7, qemu 9"
    off = fr.status_result(WHERE, [])
    assert (off.power, off.proof) == (Power.OFF, f"{WHERE} has no processes")


def test_off_is_done_only_when_nothing_is_left():
    """The proof names what was killed; a survivor makes it failed, power on."""
    killed = [proc(7, "libvirtd"), proc(9, "qemu")]
    done = fr.off_result(WHERE, killed, [], waited=0.24, timeout=30)
    assert (done.outcome, done.power) == (Outcome.DONE, Power.OFF) and done.done
    assert done.proof == (f"{WHERE} has no processes left (was 2: libvirtd 7, qemu 9); "
                          "0.2 s after the kill")  # fmt: skip
    stuck = fr.off_result(WHERE, killed, [proc(9, "qemu", state="D")], waited=30, timeout=30)
    assert (stuck.outcome, stuck.power) == (Outcome.FAILED, Power.ON) and not stuck.done
    assert "still has 1 processes 30 s after the kill: qemu 9" in stuck.proof


def test_on_needs_processes_and_the_agents_announcement():
    """Processes without the URL file are not enough; neither is a URL without processes."""
    members = [proc(5, "testhost")]
    up = fr.on_result(WHERE, members, url="ws://x", url_file="/d/agent.url", exited=None,
                      waited=1.5, timeout=60)  # fmt: skip
    assert (up.outcome, up.power) == (Outcome.DONE, Power.ON)
    assert "the agent's URL file /d/agent.url says ws://x" in up.proof
    half = fr.on_result(WHERE, members, url=None, url_file="/d/agent.url", exited=None,
                        waited=60, timeout=60)  # fmt: skip
    assert (half.outcome, half.power) == (Outcome.FAILED, Power.ON)
    dead = fr.on_result(WHERE, [], url="ws://stale", url_file="/d/agent.url", exited=3,
                        waited=0.1, timeout=60)  # fmt: skip
    assert (dead.outcome, dead.power) == (Outcome.FAILED, Power.OFF)
    assert "status 3" in dead.message


def test_reboot_stops_after_an_unproven_off_and_keeps_both_steps():
    """No start while the old host may still run; a full reboot keeps its two steps."""
    off_failed = fr.off_result(WHERE, [proc(1)], [proc(1)], waited=5, timeout=5)
    stopped = fr.reboot_result(off_failed, None)
    assert stopped.action == "reboot" and stopped.outcome is Outcome.FAILED
    assert stopped.steps == (off_failed,) and "not proven" in stopped.message
    off = fr.off_result(WHERE, [proc(1)], [], waited=0.1, timeout=5)
    on = fr.already_on(WHERE, [proc(2)])
    rebooted = fr.reboot_result(off, on)
    assert (rebooted.outcome, rebooted.power, rebooted.message) == (Outcome.DONE, Power.ON,
                                                                      "rebooted")  # fmt: skip
    assert [s.action for s in rebooted.steps] == ["off", "on"]
    assert proven_off(rebooted) and not proven_off(stopped) and not proven_off(on)


def test_restart_needs_a_different_instance():
    """The same instance answering, or none, is a failure; another one is the proof."""
    before = AgentInstance("a", 10.0)
    done = fr.restart_result(before, AgentInstance("b", 20.0), waited=2.04, timeout=60,
                             asked="Host.restart answered")  # fmt: skip
    assert (done.outcome, done.power) == (Outcome.DONE, Power.ON)
    assert done.proof == ("agent instance a (started at 10.000) was replaced by agent instance "
                          "b (started at 20.000), which answers the link 2.0 s after the "
                          "request (Host.restart answered)")  # fmt: skip
    same = fr.restart_result(before, AgentInstance("a", 10.0), waited=60, timeout=60, asked="x")
    assert (same.outcome, same.power) == (Outcome.FAILED, Power.ON)
    gone = fr.restart_result(before, None, waited=60, timeout=60, asked="x")
    assert (gone.outcome, gone.power) == (Outcome.FAILED, Power.UNKNOWN)
    assert "the link is down" in gone.proof


def test_agent_instance_from_capabilities():
    """Capabilities without an instance id name no instance."""
    assert AgentInstance.of({"agentInstance": "x", "agentStarted": 5}) == AgentInstance("x", 5)
    assert AgentInstance.of({"agentInstance": "x", "agentStarted": "soon"}).started is None
    assert AgentInstance.of({"uuid": "y"}) is None and AgentInstance.of(None) is None


def test_results_serialize_with_their_agent_and_steps():
    """``by`` attributes a result and its steps; ``as_dict`` gives plain JSON values."""
    off = fr.off_result(WHERE, [proc(1)], [], waited=0.1, timeout=5)
    rebooted = fr.reboot_result(off, fr.already_on(WHERE, [proc(2)])).by("power")
    shape = rebooted.as_dict()
    assert shape["agent"] == "power" and shape["outcome"] == "done" and shape["power"] == "on"
    assert [s["agent"] for s in shape["steps"]] == ["power", "power"]
    assert shape["steps"][0]["steps"] == []


# -- the process driver's options -------------------------------------------------------------


def test_process_options_are_checked_and_filled_in():
    """Defaults are added; paths, the start command and timeouts are type-checked."""
    checked = check_options({"cgroup": "vl/h1", "start": ["python3", "-m", "x"],
                             "stop_timeout": 5})  # fmt: skip
    assert checked == {"cgroup": "vl/h1", "start": ["python3", "-m", "x"],
                       "start_timeout": 60.0, "stop_timeout": 5.0,
                       "poll_interval": 0.1}  # fmt: skip
    assert check_options({"state_file": "/d/testhost.json"})["state_file"] == "/d/testhost.json"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "give cgroup"),
        ({"cgroup": "x", "colour": "red"}, "unknown option(s) colour"),
        ({"cgroup": ""}, "cgroup must be a non-empty path"),
        ({"cgroup": "x", "start": "python3 -m x"}, "start must be"),
        ({"cgroup": "x", "start": []}, "start must be"),
        ({"cgroup": "x", "stop_timeout": 0}, "stop_timeout must be a positive"),
        ({"cgroup": "x", "start_timeout": True}, "start_timeout must be a positive"),
        ("cgroup=x", "options must be an object"),
    ],
)
def test_process_options_refused_name_the_problem(options, named):
    """Every refusal says which option is wrong."""
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        check_options(options)


# -- agent choice, API shapes -----------------------------------------------------------------


def test_default_agents():
    """restart is soft; status is power when power management is enabled; the rest power."""
    assert default_agent(FenceAction.RESTART, True) == "soft"
    assert default_agent(FenceAction.STATUS, False) == "soft"
    assert default_agent(FenceAction.STATUS, True) == "power"
    assert {default_agent(a, False) for a in ("off", "on", "reboot")} == {"power"}


def test_power_management_shape_never_holds_secrets():
    """Declared secrets and secret-looking option names are named, never given."""
    row = HostPowerManagement(uuid.UUID(int=1), enabled=True, driver="ipmi",
                              options={"address": "10.0.0.5", "password": "hunter2",
                                       "ssh_key": "AAAA", "pin": "1234"})  # fmt: skip
    shape = wire.power_management(row, declared={"pin"}, updated=None)
    assert shape["options"] == {"address": "10.0.0.5"}
    assert shape["secret_options"] == ["password", "pin", "ssh_key"]
    assert "hunter2" not in repr(shape) and "1234" not in repr(shape)
    assert "hunter2" not in wire.summary(row) and "password" in wire.summary(row)
    assert wire.summary(HostPowerManagement(uuid.UUID(int=1))) == (
        "disabled, no driver; fencing enabled"
    )
