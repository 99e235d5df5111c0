"""Conformance suite for hooks.scripts: real scripts in a temp hooks dir, the real reactor.

In the manner of VDSM's own hook tests: ordering, exit codes, payload chaining, environment,
timeouts with process-group kills, misbehaving scripts, launch flags and the inventory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from hooks import scripts as hook_scripts
from hooks.points import UnknownHookPoint
from hooks.scripts import ScriptHookRunner, ScriptsOutcome, read_launch_flags

DOMAIN = "<domain type='kvm'><name>vm1</name></domain>"
VM_ID = "6f1e6a9a-3c4b-4f6e-9a51-0c2d7c1f0b11"


def write_script(hooks_dir: Path, point: str, name: str, body: str, mode: int = 0o755) -> Path:
    """Write an executable script ``<hooks_dir>/<point>/<name>`` and :returns: its path."""
    path = hooks_dir / point / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(mode)
    return path


def sh(body: str) -> str:
    """:returns: a POSIX shell script with ``body``."""
    return "#!/bin/sh\n" + body + "\n"


def py(body: str) -> str:
    """:returns: a python3 script with ``body``."""
    return "#!/usr/bin/env python3\n" + body + "\n"


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    """An empty hooks directory."""
    path = tmp_path / "hooks"
    path.mkdir()
    return path


@pytest.fixture(params=[None, ""], ids=["setsid-binary", "python-launcher"])
def runner(hooks_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> ScriptHookRunner:
    """A runner over ``hooks_dir`` with a short timeout, with each launcher."""
    from twisted.internet import reactor

    return ScriptHookRunner(
        str(hooks_dir),
        reactor=reactor,
        runtime_dir=str(tmp_path / "run"),
        timeout=5.0,
        linger=0.3,
        kill_grace=0.3,
        setsid=request.param,
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """:returns: the live pids whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


# Ordering and exit codes.


@pytest_twisted.ensureDeferred
async def test_no_scripts_returns_payload(runner: ScriptHookRunner) -> None:
    """A point without a directory returns the payload untouched with no results."""
    outcome = await runner.run("before_vm_start", DOMAIN)
    assert outcome == ScriptsOutcome(DOMAIN)
    assert outcome.ok


@pytest_twisted.ensureDeferred
async def test_lexicographic_order(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Scripts run in lexicographic order of their names, whatever order they were created."""
    for name in ["50_b", "10_a", "60_c", "5_z"]:
        write_script(
            hooks_dir, "before_vm_start", name, sh(f'echo -n " {name}" >> "$_hook_domxml"')
        )
    outcome = await runner.run("before_vm_start", "")
    assert outcome.payload == " 10_a 50_b 5_z 60_c"
    assert [r.name for r in outcome.results] == ["10_a", "50_b", "5_z", "60_c"]


@pytest_twisted.ensureDeferred
async def test_rc1_errors_and_continues(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Exit code 1 records the script's stderr as an error and the next script still runs."""
    write_script(hooks_dir, "after_vm_pause", "10_fail", sh("echo oops >&2; exit 1"))
    write_script(hooks_dir, "after_vm_pause", "20_ok", sh("exit 0"))
    outcome = await runner.run("after_vm_pause", DOMAIN)
    assert [r.rc for r in outcome.results] == [1, 0]
    assert outcome.errors == ["oops"]
    assert not outcome.stopped and not outcome.ok


@pytest_twisted.ensureDeferred
async def test_rc2_stops_point(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Exit code 2 records an error and stops the point: later scripts do not run."""
    write_script(
        hooks_dir, "before_vm_migrate_source", "10_veto", sh("echo local disk >&2; exit 2")
    )
    write_script(hooks_dir, "before_vm_migrate_source", "20_never", sh("echo ran > /dev/stderr"))
    outcome = await runner.run("before_vm_migrate_source", DOMAIN)
    assert [r.name for r in outcome.results] == ["10_veto"]
    assert outcome.stopped and outcome.errors == ["local disk"]


@pytest_twisted.ensureDeferred
async def test_reserved_rc_counts_as_error(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Exit codes above 2 are a warning: the next script runs, and it counts as an error."""
    write_script(hooks_dir, "after_vm_cont", "10_odd", sh("exit 7"))
    write_script(hooks_dir, "after_vm_cont", "20_ok", sh("exit 0"))
    outcome = await runner.run("after_vm_cont", DOMAIN)
    assert [r.rc for r in outcome.results] == [7, 0]
    assert outcome.errors == ["10_odd: rc=7"] and not outcome.stopped


@pytest_twisted.ensureDeferred
async def test_non_executables_and_directories_ignored(
    runner: ScriptHookRunner, hooks_dir: Path
) -> None:
    """Only executable regular files run: plain files, directories and dangling links do not."""
    write_script(hooks_dir, "before_vm_start", "10_plain", sh("exit 1"), mode=0o644)
    (hooks_dir / "before_vm_start" / "20_dir").mkdir(mode=0o755)
    (hooks_dir / "before_vm_start" / "30_dangling").symlink_to(hooks_dir / "nowhere")
    write_script(hooks_dir, "before_vm_start", "40_ok", sh("exit 0"))
    outcome = await runner.run("before_vm_start", DOMAIN)
    assert [r.name for r in outcome.results] == ["40_ok"]


@pytest_twisted.ensureDeferred
async def test_unknown_point_fails(runner: ScriptHookRunner) -> None:
    """An unknown or path-like point fails the Deferred with UnknownHookPoint."""
    for name in ["before_nap", "../before_vm_start", "/etc", "before_vm_start/x"]:
        with pytest.raises(UnknownHookPoint):
            await runner.run(name, DOMAIN)


# Payload.


@pytest_twisted.ensureDeferred
async def test_payload_chaining(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Each script sees its predecessor's edit and the final content is returned."""
    edit = "sed -i 's/{a}/{b}/' \"$_hook_domxml\""
    write_script(hooks_dir, "before_vm_start", "10", sh(edit.format(a="vm1", b="vm2")))
    write_script(hooks_dir, "before_vm_start", "20", sh(edit.format(a="vm2", b="vm3")))
    outcome = await runner.run("before_vm_start", DOMAIN)
    assert outcome.payload == DOMAIN.replace("vm1", "vm3") and outcome.ok


@pytest_twisted.ensureDeferred
async def test_json_point_round_trip(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """At a JSON point the object goes through ``_hook_json`` and comes back parsed."""
    body = "import hooking\nd = hooking.read_json()\nd['extra'] = 1\nhooking.write_json(d)"
    write_script(hooks_dir, "after_get_caps", "10_add", py(body))
    outcome = await runner.run("after_get_caps", {"cpuCores": "4"})
    assert outcome.payload == {"cpuCores": "4", "extra": 1} and outcome.ok


@pytest_twisted.ensureDeferred
async def test_none_payload_is_empty_file(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """A None payload gives an empty ``_hook_domxml`` file; None comes back."""
    write_script(
        hooks_dir, "before_vm_destroy", "10", sh('test -f "$_hook_domxml" -a ! -s "$_hook_domxml"')
    )
    outcome = await runner.run("before_vm_destroy", None, vm_id=VM_ID)
    assert outcome.ok and outcome.payload is None


@pytest_twisted.ensureDeferred
async def test_payload_file_removed(
    runner: ScriptHookRunner, hooks_dir: Path, tmp_path: Path
) -> None:
    """The payload file lives in the runtime dir and is removed after the point."""
    write_script(hooks_dir, "before_vm_start", "10", sh('echo "$_hook_domxml"'))
    outcome = await runner.run("before_vm_start", DOMAIN)
    path = outcome.results[0].stdout.strip()
    assert path.startswith(str(tmp_path / "run")) and not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_deleted_payload_file(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """A script that deletes its payload file is an error and the original payload returns."""
    write_script(hooks_dir, "before_vm_start", "10_rm", sh('rm -f "$_hook_domxml"'))
    outcome = await runner.run("before_vm_start", DOMAIN)
    assert outcome.payload == DOMAIN
    assert outcome.errors == ["hook deleted its payload file"]


@pytest_twisted.ensureDeferred
async def test_invalid_json(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Invalid JSON written at a JSON point is an error and the original payload returns."""
    write_script(hooks_dir, "after_disk_prepare", "10_bad", sh('echo "{nope" > "$_hook_json"'))
    drive = {"path": "/dev/x", "format": "raw"}
    outcome = await runner.run("after_disk_prepare", drive)
    assert outcome.payload == drive
    assert len(outcome.errors) == 1 and "invalid JSON" in outcome.errors[0]


@pytest_twisted.ensureDeferred
async def test_garbage_output(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Binary garbage on stdout/stderr is captured (decoded with replacement) and bounded."""
    body = sh("head -c 200000 /dev/urandom; head -c 100 /dev/urandom >&2; exit 0")
    write_script(hooks_dir, "after_vm_start", "10_noise", body)
    outcome = await runner.run("after_vm_start", DOMAIN)
    result = outcome.results[0]
    assert result.rc == 0 and outcome.ok and outcome.payload == DOMAIN
    assert 0 < len(result.stdout.encode("utf-8", "surrogatepass")) <= 4 * hook_scripts.OUTPUT_LIMIT


# Environment.


@pytest_twisted.ensureDeferred
async def test_environment(runner: ScriptHookRunner, hooks_dir: Path, tmp_path: Path) -> None:
    """Scripts get vmId, params, custom properties (custom wins), PYTHONPATH and the runtime dir."""
    body = "import json, os\nprint(json.dumps(dict(os.environ)))"
    write_script(hooks_dir, "before_vm_start", "10_env", py(body))
    outcome = await runner.run(
        "before_vm_start",
        DOMAIN,
        vm_id=VM_ID,
        custom={"cpuflags": "+vmx", "shared": "custom"},
        params={"shared": "params", "speed": "10"},
    )
    env = json.loads(outcome.results[0].stdout)
    assert env["vmId"] == VM_ID and env["cpuflags"] == "+vmx" and env["speed"] == "10"
    assert env["shared"] == "custom"
    assert "_hook_domxml" in env and "_hook_json" not in env
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == hook_scripts.PYTHONPATH_DIR
    assert env["VDSMLIKE_RUNTIME_DIR"] == str(tmp_path / "run")
    assert env.get("HOME") == os.environ.get("HOME"), "the agent environment is the base"


@pytest_twisted.ensureDeferred
async def test_json_point_env_and_base_env(hooks_dir: Path, tmp_path: Path) -> None:
    """JSON points name the file ``_hook_json``; base_env replaces the agent's environment."""
    from twisted.internet import reactor

    runner = ScriptHookRunner(
        str(hooks_dir),
        reactor=reactor,
        runtime_dir=str(tmp_path / "run"),
        base_env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/opt/x", "ONLY": "1"},
    )
    write_script(hooks_dir, "before_get_stats", "10_env", sh("env"))
    outcome = await runner.run("before_get_stats", {})
    lines = set(outcome.results[0].stdout.splitlines())
    assert any(line.startswith("_hook_json=") for line in lines)
    assert not any(line.startswith("_hook_domxml=") for line in lines)
    assert "ONLY=1" in lines and "HOME=" + os.environ.get("HOME", "x") not in lines
    assert f"PYTHONPATH=/opt/x{os.pathsep}{hook_scripts.PYTHONPATH_DIR}" in lines


@pytest_twisted.ensureDeferred
async def test_invalid_custom_names_skipped(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Custom keys that are not environment names, and unencodable values, are skipped."""
    write_script(hooks_dir, "before_vm_start", "10_env", sh("env"))
    custom: dict[Any, Any] = {
        "good_1": "yes",
        "bad-name": "x",
        "1digit": "x",
        "a=b": "x",
        "nul": "a\0b",
        "surrogate": "\udcff",
        "number": 3,
    }
    outcome = await runner.run("before_vm_start", DOMAIN, custom=custom)
    lines = outcome.results[0].stdout.splitlines()
    assert "good_1=yes" in lines and "number=3" in lines
    for bad in ["bad-name=", "1digit=", "a=b=", "nul=", "surrogate="]:
        assert not any(line.startswith(bad) for line in lines)


# Timeouts and children.


@pytest.mark.parametrize("launcher", [None, ""])
@pytest_twisted.ensureDeferred
async def test_timeout_kills_process_group(hooks_dir: Path, tmp_path: Path, launcher: str) -> None:
    """A script past its per-point timeout is killed with every process of its group."""
    from twisted.internet import reactor

    runner = ScriptHookRunner(
        str(hooks_dir),
        reactor=reactor,
        runtime_dir=str(tmp_path / "run"),
        timeout=60.0,
        timeouts={"before_vm_start": 0.7},
        kill_grace=0.3,
        setsid=launcher,
    )
    body = sh("sleep 1000 & sleep 1000 & echo $$; sleep 1000")
    write_script(hooks_dir, "before_vm_start", "10_hang", body)
    write_script(hooks_dir, "before_vm_start", "20_next", sh("exit 0"))
    started = time.monotonic()
    outcome = await runner.run("before_vm_start", DOMAIN)
    assert time.monotonic() - started < 5
    hung = outcome.results[0]
    assert hung.timed_out and hung.rc is None
    assert "timed out" in outcome.errors[0] and len(outcome.errors) == 1
    assert [r.name for r in outcome.results] == ["10_hang", "20_next"]
    pgid = int(hung.stdout.strip())
    assert group_members(pgid) == [] and not alive(pgid)


@pytest_twisted.ensureDeferred
async def test_background_child_holding_stdout(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """A script exiting while its child keeps stdout open does not hang: the group is killed."""
    body = sh("sleep 1000 & echo $!; exit 0")
    write_script(hooks_dir, "after_vm_start", "10_leak", body)
    started = time.monotonic()
    outcome = await runner.run("after_vm_start", DOMAIN)
    assert time.monotonic() - started < 3
    result = outcome.results[0]
    assert result.rc == 0 and not result.timed_out and outcome.ok
    child = int(result.stdout.strip())
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.01)
    assert not alive(child)


@pytest_twisted.ensureDeferred
async def test_background_child_with_stdio_closed(
    runner: ScriptHookRunner, hooks_dir: Path
) -> None:
    """A script that leaves a daemon child with its stdio closed completes normally."""
    body = sh("sleep 30 >/dev/null 2>&1 </dev/null & echo $!; exit 0")
    write_script(hooks_dir, "after_vm_start", "10_daemon", body)
    started = time.monotonic()
    outcome = await runner.run("after_vm_start", DOMAIN)
    assert time.monotonic() - started < 0.3 + 1
    child = int(outcome.results[0].stdout.strip())
    try:
        assert outcome.ok and alive(child), "a well-behaved daemon is left alone"
    finally:
        os.kill(child, 9)


@pytest_twisted.ensureDeferred
async def test_script_runs_in_own_session(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Each script leads its own session and process group and has no stdin."""
    body = "import os, sys\nprint(os.getpid(), os.getpgid(0), os.getsid(0), sys.stdin.read() == '')"
    write_script(hooks_dir, "before_vm_start", "10", py(body))
    outcome = await runner.run("before_vm_start", DOMAIN)
    pid, pgid, sid, empty = outcome.results[0].stdout.split()
    assert pid == pgid == sid and empty == "True"
    assert int(sid) != os.getsid(0)


@pytest_twisted.ensureDeferred
async def test_not_executable_format(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """An executable file the kernel cannot run fails with rc > 2 and a message naming it."""
    write_script(hooks_dir, "after_vm_start", "10_noshebang", "\x7fELF garbage")
    outcome = await runner.run("after_vm_start", DOMAIN)
    assert outcome.results[0].rc in (126, 127) and "10_noshebang" in outcome.errors[0]


# VDSM scripts, launch flags, inventory.


@pytest_twisted.ensureDeferred
async def test_vdsm_style_scripts_run_unchanged(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Scripts written for VDSM (``import hooking`` and ``from vdsm.hook import hooking``) run."""
    first = (
        "import os\nimport hooking\n"
        "domxml = hooking.read_domxml()\n"
        "name = domxml.getElementsByTagName('name')[0]\n"
        "name.firstChild.nodeValue = os.environ['newname']\n"
        "hooking.write_domxml(domxml)\n"
    )
    second = (
        "from vdsm.hook import hooking\n"
        "domxml = hooking.read_domxml()\n"
        "dom = domxml.getElementsByTagName('domain')[0]\n"
        "dom.appendChild(domxml.createElement('description'))\n"
        "hooking.write_domxml(domxml)\n"
    )
    write_script(hooks_dir, "before_vm_start", "10_rename", py(first))
    write_script(hooks_dir, "before_vm_start", "20_describe", py(second))
    outcome = await runner.run("before_vm_start", DOMAIN, custom={"newname": "renamed"})
    assert outcome.ok, outcome.errors
    assert "<name>renamed</name><description/></domain>" in outcome.payload


@pytest_twisted.ensureDeferred
async def test_launch_flags_round_trip(
    runner: ScriptHookRunner, hooks_dir: Path, tmp_path: Path
) -> None:
    """A before_vm_start hook asks for a paused start via hooking; the runner side reads it."""
    body = (
        "import os, hooking\n"
        "vm = os.environ['vmId']\n"
        "flags = hooking.load_vm_launch_flags_from_file(vm)\n"
        "hooking.dump_vm_launch_flags_to_file(vm, flags | 1)\n"
    )
    write_script(hooks_dir, "before_vm_start", "10_paused", py(body))
    runtime = str(tmp_path / "run")
    assert read_launch_flags(runtime, VM_ID) is None
    outcome = await runner.run("before_vm_start", DOMAIN, vm_id=VM_ID)
    assert outcome.ok, outcome.errors
    assert read_launch_flags(runtime, VM_ID) == 1
    assert hook_scripts.launch_flags_path(runtime, VM_ID) == f"{runtime}/{VM_ID}/launchflags"


def test_installed_checksums(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """installed() lists known point dirs with sha256 of their executable regular files."""
    script = write_script(hooks_dir, "before_vm_start", "50_x", sh("exit 0"))
    write_script(hooks_dir, "before_vm_start", "60_plain", sh("exit 0"), mode=0o644)
    (hooks_dir / "after_vm_stop").mkdir()
    (hooks_dir / "not_a_point").mkdir()
    write_script(hooks_dir, "not_a_point", "x", sh("exit 0"))
    (hooks_dir / "after_get_caps").mkdir()
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    assert runner.installed() == {
        "before_vm_start": {"50_x": {"checksum": digest}},
        "after_get_caps": {},
    }
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


@pytest_twisted.ensureDeferred
async def test_log_line_names_script_and_rc(runner: ScriptHookRunner, hooks_dir: Path) -> None:
    """Each script is logged VDSM-style as ``<script>: rc=<rc> err=<stderr>``."""
    from twisted.logger import capturedLogs, formatEvent

    write_script(hooks_dir, "after_vm_start", "10_talk", sh("echo said >&2; exit 1"))
    with capturedLogs() as events:
        await runner.run("after_vm_start", DOMAIN)
    lines = [formatEvent(e) for e in events]
    assert "10_talk: rc=1 err=said\n" in lines
