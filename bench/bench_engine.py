"""Engine benchmark: many simulated hosts, thousands of VMs, against baselines from the same run.

Simulated hosts are real agents on libvirt's test driver, several per process
(:mod:`bench.multiagent`); the engine runs in this process on a private PostgreSQL (no fsync)
with its default intervals (host and VM polls every 5 s, heartbeat 2 s). Rows:

- **connect N hosts**: ``add_host`` for every agent until all are Up;
- **start V VMs**: define them, then ``start_vm`` (at most ``--window`` requests waiting for
  their job at once) until the engine sees every VM Up, against the same number of raw
  ``VM.create`` calls made straight to the agents (same window) until every agent reported Up;
- **scheduling decision**: the time of each placement in the engine (snapshot of every host +
  filters + weights + reservation), p50 and p99, against a first-fit loop over the same hosts;
- **start accepted**: ``start_vm`` call until its job is returned (decision and job rows);
- **monitoring CPU**: this process's CPU while the engine monitors every host and VM, against a
  bare client polling the same verbs at the same intervals and only decoding the answers;
- **pure scheduling, 500 hosts**: one ``schedule`` call over a 500-host snapshot, against the
  first-fit loop over the same 500 hosts.

``python -m bench.bench_engine [--hosts 100] [--vms-per-host 20] [--per-process 10]
[--cpu-seconds 30] [--window 100] [--quick]``; prints a table.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from typing import Any

import psutil
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import deferLater, react

from engine.config import EngineConfig
from engine.decide.model import HostView, VmRequest, schedulable_memory_mib
from engine.decide.policies import make_policy
from engine.decide.scheduler import schedule
from engine.service import make_service
from engine.store.cluster import PostgresCluster
from engine.store.rows import VmStatus
from vdsmlike import client as agent_client

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VM_MIB = 256


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def _until(reactor: Any, predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark step timed out: {what}")
        await deferLater(reactor, 0.02, lambda: None)


class AgentFleet:
    """Simulated hosts: ``count`` agents in processes of ``per_process`` each."""

    def __init__(self, base: str, count: int, per_process: int) -> None:
        self.base = base
        self.groups = [min(per_process, count - i) for i in range(0, count, per_process)]
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []

    async def start(self, reactor: Any) -> list[str]:
        """Start every process; :returns: every agent's URL."""
        dirs = []
        for i, count in enumerate(self.groups):
            directory = os.path.join(self.base, f"p{i}")
            os.makedirs(directory)
            dirs.append(directory)
            log = open(os.path.join(directory, "log.txt"), "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.multiagent", "--count", str(count), "--dir",
                 directory], stdout=log, stderr=subprocess.STDOUT, cwd=TOP))
            log.close()
        paths = [os.path.join(d, "urls.txt") for d in dirs]
        await _until(reactor, lambda: all(os.path.exists(p) for p in paths), 120, "agents")
        for path in paths:
            with open(path, encoding="utf-8") as f:
                self.urls += [line.strip() for line in f if line.strip()]
        return self.urls

    def stop(self) -> None:
        """SIGTERM every process and wait."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


# -- the baseline: raw VM.create -------------------------------------------------------------


async def raw_starts(reactor: Any, urls: list[str], per_host: int, window: int) -> float:
    """Seconds to create ``per_host`` VMs on every agent directly until all are Up; the VMs
    are destroyed afterwards."""
    clients, up = [], set()

    def watch(event_id: str, params: dict) -> None:
        for key, value in params.items():
            if isinstance(value, dict) and value.get("status") == "Up":
                up.add(key)

    for url in urls:
        client = await agent_client.connect(reactor, url)
        client.on_event(watch)
        await client.subscribe(["|virt|VM_status|*"])
        clients.append(client)
    plan = [(c, str(uuid.uuid4())) for c in clients for _ in range(per_host)]
    gate = DeferredSemaphore(window)
    start = time.perf_counter()
    calls = [gate.run(c.call, "VM.create", {"vmParams": {
        "vmId": vm_id, "vmName": f"raw-{vm_id[:8]}", "memSize": VM_MIB}}) for c, vm_id in plan]
    await gatherResults(calls)
    await _until(reactor, lambda: len(up) >= len(plan), 600, "raw VMs Up")
    elapsed = time.perf_counter() - start
    await gatherResults([gate.run(c.call, "VM.destroy", {"vmID": v}) for c, v in plan])
    for client in clients:
        await client.close()
    return elapsed


async def raw_polling_cpu(reactor: Any, urls: list[str], seconds: float,
                          interval: float = 5.0) -> float:
    """CPU (% of one core) of a bare client polling every agent like the engine does."""
    clients = [await agent_client.connect(reactor, url) for url in urls]
    stop = time.monotonic() + seconds
    me = psutil.Process()

    async def poll(client: Any) -> None:
        while time.monotonic() < stop:
            await client.call("Host.getStats")
            await client.call("Host.getAllVmStats")
            await client.call("Host.ping2")
            await deferLater(reactor, interval, lambda: None)

    before, wall = sum(me.cpu_times()[:2]), time.monotonic()
    await gatherResults([Deferred.fromCoroutine(poll(c)) for c in clients])
    used = sum(me.cpu_times()[:2]) - before
    elapsed = time.monotonic() - wall
    for client in clients:
        await client.close()
    return 100.0 * used / elapsed


# -- the engine ------------------------------------------------------------------------------


class EngineRun:
    """The engine's service tree in this process, timing every placement it makes."""

    def __init__(self, base: str, dsn: str, reactor: Any) -> None:
        state = os.path.join(base, "engine")
        os.makedirs(state)
        config = replace(EngineConfig(), listen_host="127.0.0.1", listen_port=0,
                         state_dir=state, db=dsn, start_timeout=600)
        self.top = make_service(config, reactor, out=io.StringIO())
        self.decisions: list[float] = []
        actions = self.top.engine.vm_actions
        decide = actions._decide

        def timed(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return decide(*args, **kwargs)
            finally:
                self.decisions.append(time.perf_counter() - begin)

        actions._decide = timed

    @property
    def engine(self) -> Any:
        return self.top.engine

    async def start(self) -> None:
        self.top.startService()
        await self.top.url

    async def stop(self) -> None:
        await self.top.stopService()


async def connect_hosts(reactor: Any, engine: Any, urls: list[str]) -> float:
    """Seconds from the first ``add_host`` until every host is Up."""
    start = time.perf_counter()
    for i, url in enumerate(urls):
        await engine.add_host(f"sim{i:03d}", "127.0.0.1", port=_port(url))
    await _until(reactor, lambda: all(m.state == "Up" for m in engine.monitors.values()),
                 300, "hosts Up")
    return time.perf_counter() - start


async def engine_starts(reactor: Any, engine: Any, count: int,
                        window: int) -> tuple[float, list[float]]:
    """Define ``count`` VMs, then start them all; :returns: seconds until all are Up, and
    each ``start_vm``'s acceptance latency."""
    gate = DeferredSemaphore(20)
    vms = await gatherResults([gate.run(engine.add_vm, {"name": f"vm{i:05d}",
                                                        "memory_mib": VM_MIB})
                               for i in range(count)])
    ids = [vm.id for vm in vms]
    accepted: list[float] = []
    gate = DeferredSemaphore(window)

    async def one(vm_id: Any) -> None:
        begin = time.perf_counter()
        await engine.start_vm(vm_id)
        accepted.append(time.perf_counter() - begin)

    start = time.perf_counter()
    await gatherResults([gate.run(lambda v=v: Deferred.fromCoroutine(one(v))) for v in ids])
    table = engine.vms
    await _until(reactor, lambda: all(table.get(v).dynamic.status is VmStatus.UP for v in ids),
                 900, "engine VMs Up")
    return time.perf_counter() - start, accepted


async def monitoring_cpu(reactor: Any, seconds: float) -> float:
    """CPU (% of one core) of this process, the engine monitoring, over ``seconds``."""
    me = psutil.Process()
    before, wall = sum(me.cpu_times()[:2]), time.monotonic()
    await deferLater(reactor, seconds, lambda: None)
    return 100.0 * (sum(me.cpu_times()[:2]) - before) / (time.monotonic() - wall)


# -- pure scheduling -------------------------------------------------------------------------


def pure_scheduling(hosts: int, runs: int) -> tuple[list[float], list[float]]:
    """Seconds per ``schedule`` over ``hosts`` hosts, and per first-fit loop over them."""
    views = [HostView(id=f"h{i}", name=f"h{i:04d}", status="Up", cpus=32,
                      memory_total_mib=262144, memory_free_mib=100000,
                      memory_committed_mib=(i * 7919) % 200000, cpu_load_percent=i % 90,
                      vm_count=i % 40, vcpus_committed=i % 60) for i in range(hosts)]
    vm = VmRequest(id="vm", name="vm", memory_mib=4096, vcpus=2)
    policy = make_policy()
    schedule(vm, views, policy)  # load the plugins once
    ours, base = [], []
    for _ in range(runs):
        begin = time.perf_counter()
        decision = schedule(vm, views, policy)
        ours.append(time.perf_counter() - begin)
        assert decision.host is not None
        begin = time.perf_counter()
        best = max((h for h in views if h.status == "Up"
                    and schedulable_memory_mib(h, 100) >= vm.memory_mib),
                   key=lambda h: schedulable_memory_mib(h, 100))
        base.append(time.perf_counter() - begin)
        assert best is not None
    return ours, base


# -- the table -------------------------------------------------------------------------------


def line(name: str, ours: float, base: float | None, unit: str) -> str:
    """One row: our figure, the baseline's, and their ratio."""
    shown = "" if base is None else f"{base:>12.2f}"
    ratio = "" if not base else f"{ours / base:>8.1f}x"
    return f"{name:<46} {ours:>12.2f} {shown:>12} {ratio:>9}  {unit}"


async def main(reactor: Any, args: argparse.Namespace) -> None:
    base = tempfile.mkdtemp(prefix="vlb-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                            else "/tmp")
    os.chmod(base, 0o755)
    cluster = PostgresCluster(base, reactor=reactor, durable=False)
    fleet = AgentFleet(os.path.join(base, "agents"), args.hosts, args.per_process)
    rows = [f"{'benchmark':<46} {'engine':>12} {'baseline':>12} {'ratio':>9}  unit"]
    total = args.hosts * args.vms_per_host
    try:
        await cluster.start()
        await cluster.create_database("bench")
        urls = await fleet.start(reactor)
        raw = await raw_starts(reactor, urls, args.vms_per_host, args.window)
        run = EngineRun(base, cluster.dsn("bench"), reactor)
        await run.start()
        try:
            connect = await connect_hosts(reactor, run.engine, urls)
            rows.append(line(f"connect {len(urls)} hosts (all Up)", connect, None, "s"))
            took, accepted = await engine_starts(reactor, run.engine, total, args.window)
            rows.append(line(f"start {total} VMs until Up (vs raw VM.create)", took, raw, "s"))
            rows.append(line("  VMs per second", total / took, total / raw, "VM/s"))
            first_fit = pure_scheduling(len(urls), 200)[1]
            decisions = run.decisions
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                rows.append(line(f"scheduling decision {label} ({len(urls)} hosts)",
                                 _pct(decisions, q) * 1e3, _pct(first_fit, q) * 1e3, "ms"))
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                rows.append(line(f"start_vm accepted {label}", _pct(accepted, q) * 1e3, None,
                                 "ms"))
            await deferLater(reactor, 6, lambda: None)  # let the start-up burst settle
            cpu = await monitoring_cpu(reactor, args.cpu_seconds)
        finally:
            await run.stop()
        raw_cpu = await raw_polling_cpu(reactor, urls, args.cpu_seconds)
        rows.append(line(f"monitoring CPU, {len(urls)} hosts × {args.vms_per_host} VMs, 5 s",
                         cpu, raw_cpu, "% of a core"))
        ours, first = pure_scheduling(500, args.pure_runs)
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            rows.append(line(f"pure schedule(), 500 hosts, {label}", _pct(ours, q) * 1e3,
                             _pct(first, q) * 1e3, "ms"))
    finally:
        fleet.stop()
        await cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(rows))


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_engine")
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--vms-per-host", type=int, default=20)
    p.add_argument("--per-process", type=int, default=10)
    p.add_argument("--cpu-seconds", type=float, default=30.0)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--pure-runs", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="10 hosts × 20 VMs, shorter windows")
    args = p.parse_args(argv)
    if args.quick:
        args.hosts, args.per_process, args.cpu_seconds, args.pure_runs = 10, 5, 10.0, 50
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args)))


if __name__ == "__main__":
    cli(sys.argv[1:])
