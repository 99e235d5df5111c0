"""Real QEMU guest (TCG): create → first serial output, through the agent vs. direct libvirt."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid

import libvirt
from twisted.internet.task import deferLater

from vdsmlike.agentproc import AgentProcess, connect_when_ready
from vdsmlike.virt.embedded import prepare_embedded_root
from vdsmlike.virt.libvirt_loop import ensure_event_loop
from vdsmlike.vm.domxml import build_domain

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = b"VDSMLIKE-GUEST-READY"


def guest_dir() -> str:
    """Build (once) and return the test guest directory."""
    out = (
        subprocess.run(
            [os.path.join(TOP, "contrib", "guest-image", "build.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    return out[-1]


def guest_params(directory: str) -> dict:
    return {
        "vmId": str(uuid.uuid4()),
        "vmName": "bench-" + uuid.uuid4().hex[:8],
        "memSize": 128,
        "kernel": os.path.join(directory, "vmlinuz"),
        "initrd": os.path.join(directory, "initrd.img"),
        "kernelArgs": "console=ttyS0",
    }


def _has_marker(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return MARKER in f.read()
    except FileNotFoundError:
        return False


async def _until_marker(reactor, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _has_marker(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no guest output in {path}")
        await deferLater(reactor, 0.01, lambda: None)


async def through_agent(reactor, directory: str, runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProcess(tmp, libvirt_uri=f"qemu:///embed?root={tmp}/root")
        url = await agent.start(reactor)
        try:
            client = await connect_when_ready(reactor, url)
            for _ in range(runs):
                params = guest_params(directory)
                serial = os.path.join(agent.state_dir, "serial", f"{params['vmId']}.log")
                start = time.perf_counter()
                await client.call("VM.create", {"vmParams": params})
                await _until_marker(reactor, serial)
                times.append(time.perf_counter() - start)
                await client.call("VM.destroy", [params["vmId"]])
            await client.close()
        finally:
            await agent.stop(reactor)
    return times


async def direct(reactor, directory: str, runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare_embedded_root(f"{tmp}/root")
        ensure_event_loop()  # the embedded driver refuses to open without one
        conn = libvirt.open(f"qemu:///embed?root={tmp}/root")
        try:
            for _ in range(runs):
                params = guest_params(directory)
                serial = os.path.join(tmp, f"{params['vmId']}.log")
                xml = build_domain(params, domain_type="qemu", serial_path=serial)
                start = time.perf_counter()
                dom = conn.createXML(xml, 0)
                await _until_marker(reactor, serial)
                times.append(time.perf_counter() - start)
                dom.destroy()
        finally:
            conn.close()
    return times


async def guest_rows(reactor, runs: int) -> list[str]:
    """Table rows for the real-guest benchmark."""
    from bench.bench_vm import row

    directory = guest_dir()
    base = await direct(reactor, directory, runs)
    ours = await through_agent(reactor, directory, runs)
    return [row(f"real guest create→first serial output (n={runs})", ours, base)]
