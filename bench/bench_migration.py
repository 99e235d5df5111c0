"""Live migration of a real guest: our agents' ``VM.migrate`` against raw libvirt, same run.

Two hosts on this machine are two session ``libvirtd`` daemons
(:class:`vdsmlike.libvirtd.SessionLibvirtd`, run as an unprivileged user when we are root),
and the guest is the busybox test image (QEMU TCG, 192 MiB) printing ``tick N`` once a second
on a file-backed serial console. Two rows, each ``--trials`` migrations back and forth:

1. **raw libvirt** (the baseline, first, before any agent runs): ``migrateToURI3`` from one
   daemon to the other with ``VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER``, ``tcp://127.0.0.1``,
   the guest's migratable XML as ``DEST_XML`` (serial file of the destination host) and the
   same bandwidth as ours; wall time is the blocking call.
2. **VM.migrate through the agents**: one agent per daemon (``vdsmlike.agentproc.AgentProcess``,
   default settings), ``VM.migrate`` on the source with ``dst`` = the destination agent; wall
   time runs from the call until both the destination's ``Up`` and the source's ``Down``
   (exitReason 4) events arrived. The Down source VM is destroyed (untimed) before the next hop.

Downtime, for both rows, is what the destination's libvirt reports:
``jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED)["downtime"]`` (the agents' progress events carry
the *allowed* downtime, not the measured one). After every hop the benchmark waits for the
guest to count twice on its new host, and at the end checks, from every serial log in order,
that the counter went on with no gap and no second boot.

``python -m bench.bench_migration [--trials 10] [--quick] [--bandwidth 1000]``; prints a table.
Prints ``skipped: <why>`` and exits 0 when libvirtd, QEMU or the guest image are missing.
Everything it starts (daemons, agents, guests) is stopped on the way out, failures and
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import libvirt
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThreadPool

from vdsmlike.agentproc import AgentProcess, connect_when_ready
from vdsmlike.libvirtd import LibvirtdError, SessionLibvirtd, destroy_domains
from vdsmlike.vm.domxml import build_domain

TOP = Path(__file__).resolve().parent.parent
READY = "VDSMLIKE-GUEST-READY"
#: Only whole lines count: a line being written while we read must not look like a gap.
TICK = re.compile(r"tick (\d+)\r?\n")
GUEST_MIB = 192
#: Incoming migration ports per host, apart from the ones the migration tests use.
PORTS = ((49210, 49225), (49230, 49245))
#: Agent settings: the defaults, except that a new VM is reported Up after 1 s, not 60 s
#: (creation is not measured; migration settings are all the agents' defaults).
AGENT_SETTINGS = {"guest_wait_timeout": 1.0}


class Unavailable(Exception):
    """Something the benchmark needs is missing here; the message says what."""


# -- pure: statistics, the serial counter, the table -------------------------------------


@dataclass(frozen=True)
class Summary:
    """Median, p90 (nearest rank), min and max of some samples."""

    median: float
    p90: float
    low: float
    high: float


def summarize(values: list[float]) -> Summary | None:
    """:returns: the summary of ``values``, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return Summary(statistics.median(ordered), p90, ordered[0], ordered[-1])


def ticks(text: str) -> list[int]:
    """The ``tick N`` counters in a serial log, in order (complete lines only)."""
    return [int(n) for n in TICK.findall(text)]


def continuity(logs: list[str]) -> tuple[bool, str]:
    """
    Did the guest keep counting across the serial logs of its successive hosts?

    :param logs: each host's serial log in the order the guest ran there.
    :returns: ``(rebooted, explanation)``: rebooted when the boot marker appears after the
        first log, or the counter has a gap or goes back.
    """
    if not logs or READY not in logs[0]:
        return True, "no boot marker in the first serial log"
    again = [i for i, text in enumerate(logs[1:], 1) if READY in text]
    if again:
        return True, f"boot marker again in serial log {again[0]}"
    counted = [n for text in logs for n in ticks(text)]
    # A tick may be in both logs of a hop (written just as the guest stopped): count it once.
    merged = [n for i, n in enumerate(counted) if i == 0 or n != counted[i - 1]]
    if not merged:
        return True, "the guest never counted"
    expected = list(range(merged[0], merged[0] + len(merged)))
    if merged != expected:
        first = next(i for i, (a, b) in enumerate(zip(merged, expected, strict=True)) if a != b)
        return True, f"counter jumps from {merged[first - 1]} to {merged[first]}"
    return False, f"counted tick {merged[0]}..{merged[-1]} with no gap across {len(logs)} logs"


@dataclass
class Trials:
    """One row's measurements: wall seconds and downtime ms per migration, serial logs."""

    name: str
    wall: list[float] = field(default_factory=list)
    downtime: list[float] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)


def _cells(summary: Summary | None, scale: float, digits: int) -> list[str]:
    if summary is None:
        return ["-"] * 4
    values = (summary.median, summary.p90, summary.low, summary.high)
    return [f"{v * scale:.{digits}f}" for v in values]


def _ratio(ours: Summary | None, base: Summary | None) -> str:
    if ours is None or base is None or base.median == 0:
        return "-"
    return f"{ours.median / base.median:.2f}x"


def table(rows: list[Trials]) -> str:
    """
    The result table; the first row is the baseline the ratios divide by.

    Columns: wall seconds and downtime ms (median, p90, min, max), then the ratio of each
    median to the baseline's.
    """
    head = (
        f"{'row':<32} {'n':>3}  {'wall s':>7} {'p90':>6} {'min':>6} {'max':>6}  "
        f"{'downtime ms':>11} {'p90':>5} {'min':>5} {'max':>5}  {'wall ratio':>10} "
        f"{'downtime ratio':>14}"
    )
    lines = [head, "-" * len(head)]
    base_wall, base_down = summarize(rows[0].wall), summarize(rows[0].downtime)
    for row in rows:
        wall, down = summarize(row.wall), summarize(row.downtime)
        w, d = _cells(wall, 1.0, 2), _cells(down, 1.0, 0)
        lines.append(
            f"{row.name:<32} {len(row.wall):>3}  {w[0]:>7} {w[1]:>6} {w[2]:>6} {w[3]:>6}  "
            f"{d[0]:>11} {d[1]:>5} {d[2]:>5} {d[3]:>5}  {_ratio(wall, base_wall):>10} "
            f"{_ratio(down, base_down):>14}"
        )
    return "\n".join(lines)


def guest_params(image: Path, vm_id: str) -> dict[str, Any]:
    """``VM.create`` params of the test guest (also what the raw row's XML is built from)."""
    return {
        "vmId": vm_id,
        "vmName": f"bmig-{vm_id[:8]}",
        "memSize": GUEST_MIB,
        "kernel": str(image / "vmlinuz"),
        "initrd": str(image / "initrd.img"),
        "kernelArgs": "console=ttyS0 quiet",
    }


# -- blocking helpers (threads, or before the reactor runs) -------------------------------


def find_image() -> Path:
    """:returns: the test guest's directory. :raises Unavailable: when it is not built."""
    image = Path(os.environ.get("VDSMLIKE_GUEST_DIR", TOP / "contrib" / "guest-image" / "out"))
    if not all((image / name).is_file() for name in ("vmlinuz", "initrd.img")):
        raise Unavailable(f"no test guest in {image}: run contrib/guest-image/build.sh")
    return image


def check_tools() -> None:
    """:raises Unavailable: when libvirtd, QEMU or (as root) setpriv are not installed."""
    wanted = ["libvirtd", "qemu-system-x86_64"] + (["setpriv"] if os.geteuid() == 0 else [])
    for tool in wanted:
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise Unavailable(f"{tool} is not installed")


def read(path: Path) -> str:
    """A serial log's text ('' before the guest wrote it)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_ticks(path: Path, more_than: int, timeout: float = 60.0) -> None:
    """Block until the log at ``path`` holds more than ``more_than`` ticks."""
    deadline = time.monotonic() + timeout
    while len(ticks(read(path))) <= more_than:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the guest did not count in {path}")
        time.sleep(0.05)


def completed_downtime(uri: str, vm_id: str) -> float | None:
    """The downtime (ms) the last completed job of ``vm_id`` on the host at ``uri`` reports."""
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(vm_id)
        downtime = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED).get("downtime")
        return float(downtime) if downtime is not None else None
    finally:
        conn.close()


class Lab:
    """
    Two session ``libvirtd`` hosts under one short temporary directory, and what runs on them.

    :meth:`close` is synchronous and idempotent: it runs after the benchmark and as a reactor
    shutdown trigger (Ctrl-C), and stops agents, guests and daemons, then removes the directory.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vlb-", dir="/tmp"))
        self.root.chmod(0o755)  # QEMU runs as the daemons' user and reaches files under it
        self.daemons = [
            SessionLibvirtd(self.root / name, migration_ports=ports)
            for name, ports in zip("ab", PORTS, strict=True)
        ]
        self.agents: list[AgentProcess] = []
        self.closed = False

    @property
    def uris(self) -> list[str]:
        """The two daemons' libvirt URIs."""
        return [daemon.uri for daemon in self.daemons]

    def shared(self, *parts: str) -> Path:
        """A directory the guests may write in (1777), its parents reachable (0755)."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(self.root).parents:
            (self.root / parent).chmod(0o755)
        path.chmod(0o1777)
        return path

    def start(self) -> None:
        """
        Start both daemons and have each probe QEMU once (about 4 s), so no trial pays it.

        :raises Unavailable: when a daemon does not start.
        """
        try:
            for daemon in self.daemons:
                with open(self.root / f"libvirtd-{daemon.base.name}.log", "ab") as out:
                    daemon.start(out)
            for daemon in self.daemons:
                daemon.wait_ready()
        except LibvirtdError as e:
            raise Unavailable(f"libvirtd: {e}") from None
        for uri in self.uris:
            conn = libvirt.open(uri)
            try:
                conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
            finally:
                conn.close()

    def close(self) -> None:
        """Stop the agents, destroy the guests, stop the daemons, remove the directory."""
        if self.closed:
            return
        self.closed = True
        for agent in self.agents:
            _terminate(agent)
        for daemon in self.daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                destroy_domains(daemon.uri)
            daemon.stop()
        for pid in _qemus_under(self.root):
            _kill(pid)
        shutil.rmtree(self.root, ignore_errors=True)


def _terminate(agent: AgentProcess, timeout: float = 15.0) -> None:
    if not agent.running():
        return
    os.kill(agent.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while agent.running():
        if time.monotonic() > deadline:
            os.kill(agent.pid, signal.SIGKILL)
        time.sleep(0.05)


def _qemus_under(root: Path) -> list[int]:
    """PIDs of QEMU processes whose command line names ``root``: our guests, if any are left."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline and b"qemu" in cmdline:
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- row 1: raw libvirt (runs in a thread) ------------------------------------------------


def raw_migrations(lab: Lab, image: Path, trials: int, bandwidth: int) -> Trials:
    """
    Migrate a guest made with ``createXML`` back and forth ``trials`` times with raw libvirt.

    :returns: wall s and downtime ms per migration, and each host's serial log in order.
    """
    result = Trials("raw libvirt migrateToURI3")
    vm_id = str(uuid.uuid4())
    serials = [lab.shared("raw", name) / f"{vm_id}.log" for name in "ab"]
    conns = [libvirt.open(uri) for uri in lab.uris]
    try:
        xml = build_domain(guest_params(image, vm_id), serial_path=str(serials[0]))
        conns[0].createXML(xml, 0)
        wait_ticks(serials[0], 1)
        for trial in range(trials):
            src, dst = trial % 2, (trial + 1) % 2
            dom = conns[src].lookupByUUIDString(vm_id)
            dest_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            params = {
                libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1",
                libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml.replace(
                    str(serials[src]), str(serials[dst])
                ),
                libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: bandwidth,
            }
            flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
            start = time.perf_counter()
            dom.migrateToURI3(lab.uris[dst], params, flags)
            result.wall.append(time.perf_counter() - start)
            downtime = completed_downtime(lab.uris[dst], vm_id)
            if downtime is not None:
                result.downtime.append(downtime)
            result.logs.append(read(serials[src]))  # before the guest comes back and truncates it
            wait_ticks(serials[dst], len(ticks(read(serials[dst]))) + 1)
        result.logs.append(read(serials[trials % 2]))
    finally:
        for conn in conns:
            try:
                conn.lookupByUUIDString(vm_id).destroy()
            except libvirt.libvirtError:
                pass  # not on this host
            conn.close()
    return result


# -- row 2: through the agents ------------------------------------------------------------


class AgentHost:
    """One agent daemon on one of the lab's daemons, and the VM status events it sent."""

    def __init__(self, lab: Lab, index: int) -> None:
        name = "ab"[index]
        self.uri = lab.uris[index]
        workdir = lab.root / f"{name}-agent"
        self.serial_dir = lab.shared(workdir.name, "state", "serial")
        self.proc = AgentProcess(str(workdir), libvirt_uri=self.uri, **AGENT_SETTINGS)
        lab.agents.append(self.proc)
        self.client: Any = None
        self.url = ""
        #: (perf_counter when received, status details) per VM id, in arrival order.
        self.statuses: dict[str, list[tuple[float, dict[str, Any]]]] = {}

    async def start(self, reactor: Any) -> None:
        """Start the agent, connect, subscribe to VM events."""
        self.url = await self.proc.start(reactor, timeout=90)
        self.client = await connect_when_ready(reactor, self.url, timeout=90)
        self.client.on_event(self._event)
        await self.client.subscribe(["|virt|VM_status|*"])

    async def stop(self, reactor: Any) -> None:
        """Disconnect and stop the agent (SIGTERM)."""
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.proc.running():
            await self.proc.stop(reactor)

    def _event(self, event_id: str, params: dict[str, Any]) -> None:
        now = time.perf_counter()
        vm_id = event_id.rsplit("|", 1)[-1]
        details = params.get(vm_id) if isinstance(params, dict) else None
        if isinstance(details, dict) and "status" in details:
            self.statuses.setdefault(vm_id, []).append((now, details))

    def reached(self, vm_id: str, status: str, since: float) -> tuple[float, dict] | None:
        """The first ``status`` event for ``vm_id`` received after ``since``, if any."""
        for at, details in self.statuses.get(vm_id, []):
            if at >= since and details["status"] == status:
                return at, details
        return None

    def dst(self) -> str:
        """This agent as ``VM.migrate``'s ``dst``: ``host:port``."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}"

    def serial(self, vm_id: str) -> Path:
        """Where this agent keeps ``vm_id``'s serial log."""
        return self.serial_dir / f"{vm_id}.log"

    def log_tail(self) -> str:
        """The end of the agent's log, for error messages."""
        return read(Path(self.proc.log_path))[-2000:]


async def until(reactor: Any, ready: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``ready()`` until it is truthy. :returns: its value. :raises TimeoutError:."""
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)
    return value


def in_thread(reactor: Any, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """Run blocking ``fn(*args)`` on the reactor's thread pool."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)


async def agent_hop(
    reactor: Any, src: AgentHost, dst: AgentHost, vm_id: str, bandwidth: int
) -> float:
    """
    One ``VM.migrate`` from ``src`` to ``dst``.

    :returns: seconds from the call until both dst's Up and src's Down (4) were received.
    """
    start = time.perf_counter()
    params = {"dst": dst.dst(), "maxBandwidth": bandwidth}
    await src.client.call("VM.migrate", {"vmID": vm_id, "params": params})
    try:
        up, _ = await until(reactor, lambda: dst.reached(vm_id, "Up", start), 120, "Up")
        down, details = await until(reactor, lambda: src.reached(vm_id, "Down", start), 60, "Down")
    except TimeoutError as e:
        status = await src.client.call("VM.getMigrationStatus", [vm_id])
        raise RuntimeError(f"{e}: {status}\n{src.log_tail()}\n{dst.log_tail()}") from None
    if details.get("exitReason") != 4:
        raise RuntimeError(f"source Down with {details}, not exitReason 4")
    return max(up, down) - start


async def agent_migrations(
    reactor: Any, lab: Lab, image: Path, trials: int, bandwidth: int
) -> Trials:
    """Start an agent per host, then migrate one guest back and forth ``trials`` times."""
    result = Trials("VM.migrate through the agents")
    hosts = [AgentHost(lab, 0), AgentHost(lab, 1)]
    try:
        await gatherResults([Deferred.fromCoroutine(host.start(reactor)) for host in hosts])
        vm_id = str(uuid.uuid4())
        await hosts[0].client.call("VM.create", {"vmParams": guest_params(image, vm_id)})
        await until(reactor, lambda: hosts[0].reached(vm_id, "Up", 0.0), 60, "the guest Up")
        await in_thread(reactor, wait_ticks, hosts[0].serial(vm_id), 1)
        for trial in range(trials):
            src, dst = hosts[trial % 2], hosts[(trial + 1) % 2]
            result.wall.append(await agent_hop(reactor, src, dst, vm_id, bandwidth))
            downtime = await in_thread(reactor, completed_downtime, dst.uri, vm_id)
            if downtime is not None:
                result.downtime.append(downtime)
            result.logs.append(read(src.serial(vm_id)))  # before VM.destroy and the way back
            await src.client.call("VM.destroy", [vm_id])  # the engine's part: drop Down VMs
            seen = len(ticks(read(dst.serial(vm_id))))
            await in_thread(reactor, wait_ticks, dst.serial(vm_id), seen + 1)
        result.logs.append(read(hosts[trials % 2].serial(vm_id)))
        await hosts[trials % 2].client.call("VM.destroy", [vm_id])
    finally:
        for host in hosts:
            await host.stop(reactor)
    return result


# -- the shell ----------------------------------------------------------------------------


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Measure both rows and print the table. :returns: the exit status."""
    trials = 3 if args.quick else args.trials
    try:
        check_tools()
        image = find_image()
    except Unavailable as e:
        print(f"bench_migration skipped: {e}")
        return 0
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    lab = Lab()
    reactor.addSystemEventTrigger("before", "shutdown", lab.close)  # Ctrl-C, SIGTERM
    try:
        try:
            await in_thread(reactor, lab.start)
        except Unavailable as e:
            print(f"bench_migration skipped: {e}")
            return 0
        raw = await in_thread(reactor, raw_migrations, lab, image, trials, args.bandwidth)
        ours = await agent_migrations(reactor, lab, image, trials, args.bandwidth)
    finally:
        await in_thread(reactor, lab.close)
    print(
        f"live migration of a {GUEST_MIB} MiB TCG guest between two session libvirtd daemons, "
        f"{trials} migrations back and forth per row, {args.bandwidth} MiB/s"
    )
    print(table([raw, ours]))
    status = 0
    for row in (raw, ours):
        rebooted, why = continuity(row.logs)
        print(f"{row.name}: guest rebooted: {'YES' if rebooted else 'no'} ({why})")
        status = status or int(rebooted)
    return status


def cli(argv: list[str] | None = None) -> None:
    """``python -m bench.bench_migration``: parse the options and run."""
    p = argparse.ArgumentParser(prog="bench_migration", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10, help="migrations per row (default 10)")
    p.add_argument("--quick", action="store_true", help="3 migrations per row")
    p.add_argument("--bandwidth", type=int, default=1000, help="MiB/s, both rows (default 1000)")
    args = p.parse_args(argv)
    if args.trials < 1 or args.bandwidth < 1:
        p.error("--trials and --bandwidth must be positive")

    async def main(reactor: Any) -> None:
        status = await run(reactor, args)
        if status:
            raise SystemExit(status)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))


if __name__ == "__main__":
    cli(sys.argv[1:])
