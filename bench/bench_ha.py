"""HA recovery with real hosts: from a host's power loss to every HA VM Up elsewhere.

Three real test hosts (``vdsmlike.testhost``: a session ``libvirtd`` run as an unprivileged
user, a supervised agent and its guests, all in one cgroup; power management through the
``process`` driver) and the engine in the benchmark's process, on a private PostgreSQL (no
fsync), with its default cluster-manager settings (a ping every 2 s answered within 1 s,
Connecting after 2 misses, NonResponsive 5 s after the first trouble; ``HA_TIMING``). The
agents report a new guest Up after 2 s (the test guest has no guest agent to say so sooner).

Each trial starts two HA guests (the busybox test image, QEMU TCG, 192 MiB; priorities 80 and
20) on the victim host, waits for their ready markers, then kills the victim's cgroup whole
(agent, ``libvirtd``, guests: a power loss) and times, from the kill:

- **every HA VM Up elsewhere** (the engine's rows), the issue's figure, split into detection
  (until the host is NonResponsive), proof (until its power management's "off" made it Down)
  and restart (until both VMs are Up);
- **every HA guest ready elsewhere**: their ready markers on the new hosts' serial consoles.

**Baseline**, measured in the same trial on a surviving host: the same two guests created
straight on its ``libvirtd`` (``createXML``, one after the other, as the engine starts them)
until their ready markers. It is the floor of any recovery: what booting the guests costs with
nobody detecting, proving or deciding anything. The rest is what HA adds, mostly the grace
period (5 s) that keeps a host whose network blinks from being fenced.

Between trials the HA VMs are stopped and the victim powered on again (``Hosts.fence on``)
until Up (untimed).

``python -m bench.bench_ha [--trials 10] [--quick]`` (``--quick``: 3 trials); prints a table,
or ``skipped: <why>`` (exit 0) without cgroup v2, root, libvirtd, QEMU or the guest image.
A full run takes about 4 minutes.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import libvirt
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread

from engine.config import EngineConfig
from engine.fence.cgroup import Cgroup, find_cgroup2
from engine.service import make_service
from engine.store.cluster import PostgresCluster
from vdsmlike.libvirtd import ensure_user, session_uri
from vdsmlike.testhost import TestHostProcess
from vdsmlike.vm.domxml import build_domain

TOP = Path(__file__).resolve().parent.parent
READY = "VDSMLIKE-GUEST-READY"
GUEST_MIB = 192
AGENT = ("vars.vm_sample_interval=1", "vars.host_sample_interval=1", "vars.guest_wait_timeout=2")
#: Incoming migration ports per host, apart from the tests' and the other benchmarks'.
PORTS = ((49250, 49259), (49260, 49269), (49270, 49279))


class Unavailable(Exception):
    """Something the benchmark needs is missing here; the message says what."""


# -- pure: samples and the table -------------------------------------------------------------


@dataclass
class Row:
    """One row of the table: a name and its samples, in seconds."""

    name: str
    samples: list[float] = field(default_factory=list)


def summary(samples: list[float]) -> tuple[float, float, float, float]:
    """:returns: median, p90 (nearest rank), min and max."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]
    return statistics.median(ordered), p90, ordered[0], ordered[-1]


def table(rows: list[Row], baseline: Row) -> str:
    """The rows with their median against the baseline's."""
    head = f"{'row':<58} {'n':>3} {'median s':>9} {'p90':>6} {'min':>6} {'max':>6}  vs baseline"
    lines = [head, "-" * len(head)]
    base = summary(baseline.samples)[0]
    for row in [baseline, *rows]:
        if not row.samples:
            continue
        med, p90, low, high = summary(row.samples)
        ratio = f"{med / base:>10.1f}x" if row is not baseline else f"{1.0:>10.1f}x"
        indent = row.name.startswith("  ")
        lines.append(f"{row.name:<58} {len(row.samples):>3} {med:>9.2f} {p90:>6.2f} "
                     f"{low:>6.2f} {high:>6.2f}  {'' if indent else ratio}")  # fmt: skip
    return "\n".join(lines)


# -- blocking helpers ------------------------------------------------------------------------


def find_image() -> Path:
    """:returns: the test guest's directory. :raises Unavailable: when it is not built."""
    image = Path(os.environ.get("VDSMLIKE_GUEST_DIR", TOP / "contrib" / "guest-image" / "out"))
    if not all((image / name).is_file() for name in ("vmlinuz", "initrd.img")):
        raise Unavailable(f"no test guest in {image}: run contrib/guest-image/build.sh")
    return image


def check_machine() -> None:
    """:raises Unavailable: without root, cgroup v2, libvirtd or QEMU."""
    if os.geteuid() != 0:
        raise Unavailable("running libvirtd as an unprivileged user needs root")
    if find_cgroup2() is None:
        raise Unavailable("cgroup v2 is not mounted")
    for tool in ("libvirtd", "qemu-system-x86_64", "setpriv"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise Unavailable(f"{tool} is not installed")


def serial_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class BenchHost(TestHostProcess):
    """A test host with a migration port range of its own."""

    __test__ = False

    def __init__(self, directory: Path, cgroup: str, ports: tuple[int, int]) -> None:
        super().__init__(directory, cgroup=cgroup, settings=AGENT)
        self.group = cgroup  # always set here (the base class allows none)
        self.ports = ports

    def argv(self) -> list[str]:
        return [*super().argv(), "--migration-ports", f"{self.ports[0]}-{self.ports[1]}"]

    def serial(self, vm_id: str) -> Path:
        return self.dir / "agent" / "serial" / f"{vm_id}.log"

    @property
    def uri(self) -> str:
        return session_uri(self.dir / "lv")


def raw_boot(uri: str, image: Path, scratch: Path) -> float:
    """
    The baseline (BLOCKING): create two guests on ``uri``'s daemon one after the other, until
    both ready markers; destroy them. :returns: seconds.
    """
    conn = libvirt.open(uri)
    doms, serials = [], []
    try:
        began = time.monotonic()
        for _ in range(2):
            vm_id = str(uuid.uuid4())
            serial = scratch / f"{vm_id}.log"
            params = {"vmId": vm_id, "vmName": f"bha-{vm_id[:8]}", "memSize": GUEST_MIB,
                      "kernel": str(image / "vmlinuz"), "initrd": str(image / "initrd.img"),
                      "kernelArgs": "console=ttyS0 quiet"}  # fmt: skip
            doms.append(conn.createXML(build_domain(params, serial_path=str(serial)), 0))
            serials.append(serial)
        while not all(READY in serial_text(s) for s in serials):
            if time.monotonic() - began > 60:
                raise TimeoutError("the baseline guests did not boot")
            time.sleep(0.02)
        return time.monotonic() - began
    finally:
        for dom in doms:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        conn.close()


# -- the run ---------------------------------------------------------------------------------


async def until(reactor: Any, check: Any, timeout: float, what: str, step: float = 0.05) -> Any:
    """Call the async ``check`` until it returns something true; :returns: that."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark step timed out: {what}")
        await deferLater(reactor, step, lambda: None)


class Lab:
    """The engine, its PostgreSQL and three test hosts; :meth:`close` stops everything."""

    def __init__(self, reactor: Any, image: Path) -> None:
        self.reactor, self.image = reactor, image
        self.base = Path(tempfile.mkdtemp(prefix="vlha-", dir="/tmp"))
        self.base.chmod(0o755)
        self.scratch = self.base / "raw"
        self.scratch.mkdir(mode=0o1777)
        self.scratch.chmod(0o1777)  # the baseline's guests run as the daemons' user
        tag = uuid.uuid4().hex[:6]
        self.hosts = [
            BenchHost(
                Path(tempfile.mkdtemp(prefix=f"vlb{i}-", dir="/tmp")),
                f"vdsmlike-bench/ha-{tag}-{i}",
                PORTS[i],
            )  # fmt: skip
            for i in range(3)
        ]
        self.pg = PostgresCluster(str(self.base / "pg"), reactor=reactor, durable=False)
        self.top: Any = None
        self.ids: list[Any] = []

    @property
    def engine(self) -> Any:
        return self.top.engine

    async def start(self) -> None:
        ensure_user()
        for host in self.hosts:
            host.launch()
        await self.pg.start()
        await self.pg.create_database("bench")
        # The defaults, but for a short reconnection backoff: the victim comes back sooner
        # between trials (untimed; links to the survivors never break).
        config = replace(EngineConfig(), listen_host="127.0.0.1", listen_port=0,
                         state_dir=str(self.base / "engine"), db=self.pg.dsn("bench"),
                         start_timeout=60.0, stop_timeout=30.0,
                         reconnect_max_delay=1.0)  # fmt: skip
        self.top = make_service(config, self.reactor, out=io.StringIO())
        self.top.startService()
        await self.top.url
        for i, host in enumerate(self.hosts):
            await host.wait_url(self.reactor, timeout=120)
            added = await self.engine.add_host(f"h{i}", "127.0.0.1", port=host.port)
            self.ids.append(added.id)
            await self.engine.set_power_management(
                added.id, enabled=True, driver="process",
                options=host.power_options(start_timeout=90, stop_timeout=30))  # fmt: skip
        for host_id in self.ids:
            await self.host_in(host_id, "Up", 90)

    async def host_in(self, host_id: Any, status: str, timeout: float) -> Any:
        async def check() -> Any:
            host = await self.engine.get_host(host_id)
            return host if host.dynamic.status == status else None

        return await until(self.reactor, check, timeout, f"host {status}")

    async def job(self, job: Any, timeout: float = 90.0) -> Any:
        async def check() -> Any:
            found = await self.engine.get_job(job.id)
            return found if found.status in ("succeeded", "failed") else None

        done = await until(self.reactor, check, timeout, f"job {job.action}", 0.1)
        if done.status != "succeeded":
            raise RuntimeError(f"job {job.action} failed: {done.error}")
        return done

    async def close(self) -> None:
        if self.top is not None and self.top.running:
            await self.top.stopService()
        await deferToThread(self._kill_hosts)
        await self.pg.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_hosts(self) -> None:
        for host in self.hosts:
            host.cleanup()
            shutil.rmtree(host.dir, ignore_errors=True)


async def trial(lab: Lab, vms: list[Any], victim: int, rows: dict[str, Row]) -> None:
    """One power loss of host ``victim`` running the HA ``vms``; adds to ``rows``."""
    engine, reactor = lab.engine, lab.reactor
    host_id = lab.ids[victim]
    for vm in vms:
        await lab.job(await engine.start_vm(vm.id, host_id=host_id))
    for vm in vms:
        path = lab.hosts[victim].serial(str(vm.id))
        await until(reactor, lambda p=path: _ready(p), 60, "the guests' ready markers")
    began, wall = time.monotonic(), time.time()
    Cgroup(lab.hosts[victim].group).kill()

    async def recovered() -> bool:
        found = [await engine.get_vm(vm.id) for vm in vms]
        return all(r.dynamic.status == "Up" and r.dynamic.run_on_host not in (None, host_id)
                   for r in found)  # fmt: skip

    await until(reactor, recovered, 60, "every HA VM Up elsewhere", 0.02)
    up = time.monotonic() - began
    marks = {kind: await _event_at(engine, host_id, kind) - wall
             for kind in ("HOST_NON_RESPONSIVE", "HOST_FENCED")}  # fmt: skip
    where = [(await engine.get_vm(vm.id)).dynamic.run_on_host for vm in vms]
    for vm, on in zip(vms, where, strict=True):
        path = lab.hosts[lab.ids.index(on)].serial(str(vm.id))
        await until(reactor, lambda p=path: _ready(p), 60, "the restarted guests' markers", 0.02)
    ready = time.monotonic() - began
    survivor = lab.hosts[(victim + 1) % len(lab.hosts)]
    raw = await deferToThread(raw_boot, survivor.uri, lab.image, lab.scratch)
    rows["raw"].samples.append(raw)
    rows["ready"].samples.append(ready)
    rows["up"].samples.append(up)
    rows["detect"].samples.append(marks["HOST_NON_RESPONSIVE"])
    rows["proof"].samples.append(marks["HOST_FENCED"] - marks["HOST_NON_RESPONSIVE"])
    rows["restart"].samples.append(up - marks["HOST_FENCED"])
    print(f"  trial {len(rows['up'].samples)}: up {up:.2f} s, ready {ready:.2f} s, "
          f"baseline {raw:.2f} s", flush=True)  # fmt: skip
    for vm in vms:  # clean up for the next trial (untimed)
        await lab.job(await engine.stop_vm(vm.id))
    await lab.job(await engine.fence(host_id, "on"), 120)
    await lab.host_in(host_id, "Up", 120)


async def _ready(path: Path) -> bool:
    return READY in serial_text(path)


async def _event_at(engine: Any, host_id: Any, kind: str) -> float:
    """:returns: when the newest event of ``kind`` about the host was recorded (epoch s)."""
    [event] = await engine.list_events(event_type=kind, host_id=host_id, limit=1)
    return float(event.time.timestamp())


async def main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        check_machine()
        image = find_image()
    except Unavailable as e:
        print(f"bench_ha skipped: {e}")
        return
    lab = Lab(reactor, image)
    rows = {
        "raw": Row("baseline: createXML of the 2 guests on a survivor → ready"),
        "ready": Row("HA: power loss → every HA guest ready elsewhere"),
        "up": Row("HA: power loss → every HA VM Up elsewhere (engine)"),
        "detect": Row("  detection: → NonResponsive (grace 5 s)"),
        "proof": Row("  proof: → fenced (its power management says off)"),
        "restart": Row("  restart: → every HA VM Up"),
    }
    try:
        await lab.start()
        engine = lab.engine
        vms = []
        for name, priority in (("db", 80), ("web", 20)):
            vms.append(await engine.add_vm({
                "name": name, "memory_mib": GUEST_MIB, "kernel": str(image / "vmlinuz"),
                "initrd": str(image / "initrd.img"), "cmdline": "console=ttyS0 quiet",
                "ha": True, "ha_priority": priority}))  # fmt: skip
        for _ in range(args.trials):
            await trial(lab, vms, 2, rows)
    finally:
        await lab.close()
    baseline = rows.pop("raw")
    print(table(list(rows.values()), baseline))


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_ha", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="3 trials")
    args = p.parse_args(argv)
    if args.quick:
        args.trials = min(args.trials, 3)
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args)))


if __name__ == "__main__":
    cli()
