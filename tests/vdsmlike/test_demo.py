"""The README's main command, ``python -m vdsmlike.demo``: a whole cluster on this machine
(engine with embedded PostgreSQL, two agents with embedded QEMU, real guests), driven as a user
would: run it, read what it prints, use the admin API with the printed password, press Ctrl-C.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from vdsmlike.client import call_sync

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{pid}: {cmdline[:120]}")
    return found


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """Everything the demo printed up to the line holding ``marker``."""
    deadline = time.monotonic() + timeout
    out = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if marker in line:
            return "".join(out)
    raise AssertionError(f"no {marker!r} from the demo; it printed:\n{''.join(out)}")


def test_demo_runs_a_cluster_and_ctrl_c_stops_it_all(guest_image):
    """The demo prints the engine URL and admin password; with them the admin API lists two Up
    hosts and the guests Up on them; Ctrl-C stops every guest, agent, engine and PostgreSQL."""
    state = tempfile.mkdtemp(prefix="vl-demo-", dir="/var/tmp")
    argv = [sys.executable, "-m", "vdsmlike.demo", "--state-dir", state, "--listen",
            "127.0.0.1:0", "--guests", "2", "--guest-dir", str(guest_image)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = _read_until(proc, "Ctrl-C stops", timeout=240)
        url = re.search(r"admin API at (ws://\S+/api)", printed).group(1)
        password = re.search(r"password\s+(\S+)", printed).group(1)
        token = call_sync(url, "Auth.login", {"user": "admin", "password": password})["token"]
        hosts = call_sync(url, "Hosts.list", {}, token=token)
        assert sorted((h["name"], h["status"]) for h in hosts) == [("host1", "Up"), ("host2", "Up")]
        vms = call_sync(url, "VMs.list", {}, token=token)
        assert sorted(v["name"] for v in vms) == ["demo-1", "demo-2"]
        assert {v["status"] for v in vms} == {"Up"}
        assert {v["run_on_host_id"] for v in vms} <= {h["id"] for h in hosts}
        assert len(_processes_mentioning(f"{state}/host")) >= 2 + 2, "two agents, two guests"
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[0]
        assert "stopped." in rest, rest
        assert proc.returncode == 0
        assert _processes_mentioning(state) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for line in _processes_mentioning(state):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)
