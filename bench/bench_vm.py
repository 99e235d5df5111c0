"""VM benchmarks: the agent against raw libvirt, measured in the same run.

1. create → Up → destroy cycles on ``test:///default``: through the agent (a real agent process,
   over WebSocket) vs. the same libvirt calls made directly (createXML, destroy).
2. ``Host.getAllVmStats`` with 1,000 VMs on the test driver (ms per call) vs. the raw libvirt
   sampling it rests on, and the agent's memory (RSS) at that size.
3. A real QEMU guest (TCG): create → first serial output through the agent vs. direct libvirt.

``python -m bench.bench_vm [--cycles N] [--vms N] [--skip-qemu]``; prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

import libvirt
import psutil
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from vdsmlike import client as agent_client
from vdsmlike.agentproc import AgentProcess, connect_when_ready
from vdsmlike.vm.domxml import build_domain

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(**extra) -> dict:
    params = {"vmId": str(uuid.uuid4()), "vmName": "b-" + uuid.uuid4().hex[:10], "memSize": 64}
    params.update(extra)
    return params


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _wait(predicate, timeout: float, reactor) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await deferLater(reactor, 0.001, lambda: None)


class StatusWatch:
    """Collects VM status events from one client."""

    def __init__(self, client: agent_client.AgentClient) -> None:
        self.last: dict[str, str] = {}
        client.on_event(self._event)

    def _event(self, event_id: str, params: dict) -> None:
        for key, value in params.items():
            if isinstance(value, dict) and "status" in value:
                self.last[key] = value["status"]


async def agent_cycles(reactor, url: str, cycles: int) -> list[float]:
    """Seconds per create → Up → destroy cycle through the agent."""
    client = await connect_when_ready(reactor, url)
    watch = StatusWatch(client)
    await client.subscribe(["|virt|VM_status|*"])
    times = []
    for _ in range(cycles):
        params = _params()
        vm_id = params["vmId"]
        start = time.perf_counter()
        await client.call("VM.create", {"vmParams": params})
        await _wait(lambda vm_id=vm_id: watch.last.get(vm_id) == "Up", 10, reactor)
        await client.call("VM.destroy", [vm_id])
        times.append(time.perf_counter() - start)
    await client.close()
    return times


def direct_cycles(cycles: int) -> list[float]:
    """Seconds per createXML → running → destroy cycle made directly on libvirt."""
    conn = libvirt.open("test:///default")
    times = []
    for _ in range(cycles):
        xml = build_domain(_params(), domain_type="test")
        start = time.perf_counter()
        dom = conn.createXML(xml, 0)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        dom.destroy()
        times.append(time.perf_counter() - start)
    conn.close()
    return times


async def agent_bulk(reactor, url: str, vms: int, calls: int) -> tuple[list[float], int]:
    """Create ``vms`` VMs through the agent, then time ``Host.getAllVmStats``."""
    client = await agent_client.connect(reactor, url)
    for offset in range(0, vms, 100):
        batch = [("VM.create", {"vmParams": _params()}) for _ in range(min(100, vms - offset))]
        await client.batch(batch)
    await deferLater(reactor, 2.5, lambda: None)  # let two bulk samples happen
    times = []
    count = 0
    for _ in range(calls):
        start = time.perf_counter()
        stats = await client.call("Host.getAllVmStats")
        times.append(time.perf_counter() - start)
        count = len(stats)
    await client.close()
    return times, count


def direct_bulk(vms: int, calls: int) -> list[float]:
    """Seconds per raw libvirt bulk sample of ``vms`` domains (getAllDomainStats + info)."""
    conn = libvirt.open("test:///default")
    for _ in range(vms):
        conn.createXML(build_domain(_params(), domain_type="test"), 0)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        for dom, _stats in conn.getAllDomainStats(0, 0):
            dom.info()
        times.append(time.perf_counter() - start)
    for dom in conn.listAllDomains():
        if dom.name().startswith("b-"):
            dom.destroy()
    conn.close()
    return times


def row(name: str, ours: list[float], base: list[float], unit: str = "ms") -> str:
    """One table row: our p50/p99, the baseline's p50, and the ratio of the medians."""
    scale = 1000.0
    p50, p99, b50 = _pct(ours, 0.5) * scale, _pct(ours, 0.99) * scale, _pct(base, 0.5) * scale
    return f"{name:<44} {p50:>9.2f} {p99:>9.2f} {b50:>11.2f} {p50 / b50:>8.1f}x  ({unit})"


async def main(reactor, args) -> None:
    lines = [f"{'benchmark':<44} {'p50':>9} {'p99':>9} {'baseline':>11} {'ratio':>9}"]
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProcess(
            tmp, libvirt_uri="test:///default", vm_sample_interval=1.0, guest_wait_timeout=0
        )
        url = await agent.start(reactor)
        try:
            ours = await agent_cycles(reactor, url, args.cycles)
            base = direct_cycles(args.cycles)
            lines.append(row(f"VM create→Up→destroy, test driver (n={args.cycles})", ours, base))
            ours, count = await agent_bulk(reactor, url, args.vms, args.calls)
            rss = psutil.Process(agent.pid).memory_info().rss / 2**20
        finally:
            await agent.stop(reactor)
        base = direct_bulk(args.vms, args.calls)
        lines.append(row(f"Host.getAllVmStats, {count} VMs (n={args.calls})", ours, base))
        lines.append(f"{'agent RSS with ' + str(count) + ' VMs':<44} {rss:>9.1f} MiB")
    if not args.skip_qemu:
        from bench.bench_guest import guest_rows

        lines.extend(await guest_rows(reactor, args.guest_runs))
    print("\n".join(lines))


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_vm")
    p.add_argument("--cycles", type=int, default=200)
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--guest-runs", type=int, default=3)
    p.add_argument("--skip-qemu", action="store_true")
    args = p.parse_args(argv)
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args)))


if __name__ == "__main__":
    cli(sys.argv[1:])
