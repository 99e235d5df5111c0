"""End to end with a real guest: the engine (real PostgreSQL) starts the tiny test guest on an
agent driving embedded QEMU (TCG), sees it Up with live statistics, pauses, resumes and stops it.

The agent is a child process (``vdsmlike.agentproc.AgentProcess``) with its own embedded
libvirt root, as ``tests/vdsmlike/test_agent_qemu.py`` runs it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from engine_harness import add_up_host, eventually, job_done, vm_status
from guests import READY_MARKER
from twisted.internet import reactor

from vdsmlike.agentproc import AgentProcess, kill_guests_under

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest_twisted.async_yield_fixture
async def qemu_agent():
    """A real agent daemon on embedded QEMU in a short work dir; stopped after the test."""
    workdir = tempfile.mkdtemp(prefix="vle-", dir="/tmp")
    agent = AgentProcess(
        workdir,
        libvirt_uri=f"qemu:///embed?root={workdir}/root",
        vm_sample_interval=1.0,
        host_sample_interval=1.0,
        guest_wait_timeout=2.0,
    )
    url = await agent.start(reactor)
    agent.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    yield agent
    await agent.stop(reactor)
    kill_guests_under(workdir)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_engine_runs_a_real_guest(engine_run, qemu_agent, guest_image):
    """The engine places the guest on the QEMU host, the guest boots (its ready marker appears
    on the serial console), the engine sees it Up with balloon statistics, and pause, resume
    and stop go through."""
    engine = engine_run.engine
    host = await add_up_host(engine, "qemu1", qemu_agent)
    vm = await engine.add_vm({
        "name": "guest", "memory_mib": 192, "kernel": str(guest_image / "vmlinuz"),
        "initrd": str(guest_image / "initrd.img"), "cmdline": "console=ttyS0 quiet",
    })
    job = await job_done(engine, (await engine.start_vm(vm.id)).id, timeout=60)
    assert job.status == "succeeded", job.error
    serial = Path(qemu_agent.state_dir) / "serial" / f"{vm.id}.log"
    await eventually(lambda: _text(serial), lambda text: READY_MARKER in text, timeout=60,
                     interval=0.2, what="the guest's ready marker")
    up = await vm_status(engine, vm.id, "Up", timeout=30)
    assert up.dynamic.run_on_host == host.id
    sampled = await eventually(lambda: engine.get_vm(vm.id), lambda v: v.statistics is not None
                               and v.statistics.balloon_cur_kib, timeout=30, interval=0.2)
    assert sampled.statistics.balloon_cur_kib == 192 * 1024
    paused = await job_done(engine, (await engine.pause_vm(vm.id)).id, timeout=30)
    assert paused.status == "succeeded", paused.error
    resumed = await job_done(engine, (await engine.resume_vm(vm.id)).id, timeout=30)
    assert resumed.status == "succeeded", resumed.error
    stopped = await job_done(engine, (await engine.stop_vm(vm.id)).id, timeout=30)
    assert stopped.status == "succeeded", stopped.error
    await vm_status(engine, vm.id, "Down")


async def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
