"""Real live migration between two libvirt hosts on one machine, through two real agents.

Two session ``libvirtd`` daemons (``libvirtd_harness``) are the hosts; an agent daemon runs in a
child process for each, talking to its own daemon; the guest is the busybox test image counting
``tick N`` once a second on its serial console. A migration is real: QEMU moves the guest's RAM
over TCP from one daemon's QEMU to the other's, so the counter must go on with no gap and no
second boot across repeated migrations.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import libvirt
import pytest
import pytest_twisted
from agent_harness import wait_until
from guests import READY_MARKER, guest_xml
from libvirtd_harness import Hosts, Unavailable
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from vdsmlike.agentproc import AgentProcess, connect_when_ready
from vdsmlike.client import RemoteError

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

# Fast monitoring for tests; everything else is the agents' defaults.
SETTINGS = {
    "vm_sample_interval": 1.0,
    "host_sample_interval": 1.0,
    "guest_wait_timeout": 1.0,
    "migration_monitor_interval": 0.3,
}


class Host:
    """One simulated host: a session libvirtd and an agent daemon using it."""

    def __init__(self, name: str, workdir: Path, uri: str) -> None:
        self.name = name
        self.workdir = workdir
        self.uri = uri
        self.proc = AgentProcess(str(workdir), libvirt_uri=uri, validate_results=True, **SETTINGS)
        self.client = None
        self.statuses: dict[str, list[dict]] = {}
        self.progress: dict[str, list[dict]] = {}

    @property
    def hooks(self) -> Path:
        return Path(self.proc.state_dir) / "hooks"

    @property
    def serial_dir(self) -> Path:
        return Path(self.proc.state_dir) / "serial"

    async def start(self) -> None:
        self.url = await self.proc.start(reactor, timeout=90)
        await self.connect()

    async def connect(self) -> None:
        self.client = await connect_when_ready(reactor, self.url, timeout=90)
        self.client.on_event(self._event)
        await self.client.subscribe(["*"])

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        await self.proc.stop(reactor)

    def _event(self, event_id: str, params: dict) -> None:
        kind, vm_id = event_id.split("|")[2:4] if event_id.count("|") == 3 else ("", "")
        if kind == "VM_status":
            self.statuses.setdefault(vm_id, []).append(params[vm_id])
        elif kind == "VM_migration_status":
            self.progress.setdefault(vm_id, []).append(params[vm_id])

    def states(self, vm_id: str) -> list[str]:
        return [details["status"] for details in self.statuses.get(vm_id, [])]

    async def wait_status(self, vm_id: str, status: str, timeout: float = 60.0) -> None:
        await wait_until(lambda: status in self.states(vm_id), timeout, f"{self.name}: {status}")

    async def wait_last(self, vm_id: str, status: str, timeout: float = 60.0) -> None:
        await wait_until(
            lambda: self.states(vm_id)[-1:] == [status], timeout, f"{self.name}: last {status}"
        )

    def call(self, method: str, params=None):
        return self.client.call(method, params)

    def dst(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}"

    def domains(self) -> dict[str, int]:
        """The domains the host's libvirt runs, by UUID, with their libvirt state."""
        conn = libvirt.open(self.uri)
        try:
            return {
                d.UUIDString(): d.state()[0]
                for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            }
        finally:
            conn.close()

    def log_tail(self) -> str:
        try:
            return Path(self.proc.log_path).read_text(errors="replace")[-3000:]
        except OSError:
            return ""


@pytest.fixture(scope="module")
def hosts():
    """Two session libvirtd daemons as the two hosts."""
    try:
        started = Hosts.start(2)
    except Unavailable as e:
        if os.environ.get("CI") == "true":  # as tests/conftest.py's unavailable(): CI has it all
            pytest.fail(f"required under CI=true: {e}")
        pytest.skip(str(e))
    yield started
    started.stop()


@pytest_twisted.async_yield_fixture(scope="module")
async def pair(hosts, guest_image):
    """An agent per host, both started (their first QEMU probe runs in parallel)."""
    a, b = (
        Host(name, hosts.shared(name + "-agent"), daemon.uri)
        for name, daemon in zip("ab", hosts.daemons, strict=True)
    )
    for host in (a, b):
        # The guests run as the daemons' user and write their serial logs here.
        hosts.shared(host.workdir.name, "state", "serial")
    try:
        await gatherResults([Deferred.fromCoroutine(host.start()) for host in (a, b)])
    except BaseException:
        for host in (a, b):
            print(f"--- agent {host.name} log ---\n{host.log_tail()}")
        raise
    yield a, b
    for host in (a, b):
        if host.client is not None:
            await host.stop()


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def start_guest(host: Host, image: Path) -> str:
    """Create the test guest on ``host`` and wait until it counts."""
    vm_id = str(uuid.uuid4())
    serial = host.serial_dir / f"{vm_id}.log"
    xml = guest_xml(image, serial, vm_id=vm_id, name=f"mig-{vm_id[:8]}", memory_mib=160)
    await host.call("VM.create", {"vmParams": {"xml": xml}})
    await host.wait_status(vm_id, "Up")
    await wait_until(lambda: len(ticks(read(serial))) >= 2, 60, "guest ticking")
    return vm_id


async def migrate(source: Host, dest: Host, vm_id: str, **params) -> None:
    """Migrate and wait for the hand-over: Down (4) on the source, Up on the destination."""
    params = {"dst": dest.dst(), **params}
    assert await source.call("VM.migrate", {"vmID": vm_id, "params": params}) is True
    try:
        await dest.wait_last(vm_id, "Up")
        await source.wait_last(vm_id, "Down")
    except AssertionError:
        status = await source.call("VM.getMigrationStatus", [vm_id])
        raise AssertionError(f"{status}\n{source.log_tail()}\n{dest.log_tail()}") from None
    assert source.statuses[vm_id][-1]["exitReason"] == 4
    assert dest.states(vm_id)[-2:] == ["Migration Destination", "Up"]


async def cleanup(vm_id: str, *hosts: Host) -> None:
    for host in hosts:
        try:
            await host.call("VM.destroy", [vm_id])
        except RemoteError:
            pass


def serial_of(host: Host, vm_id: str) -> Path:
    return host.serial_dir / f"{vm_id}.log"


@pytest_twisted.ensureDeferred
async def test_guest_keeps_counting_across_repeated_migrations(pair, guest_image):
    """A -> B -> A -> B: each hop ends the source Down (4) and the destination Up, the
    destination logs the serial console in its own directory, and the guest's counter goes on
    with no gap and no second boot."""
    a, b = pair
    vm_id = await start_guest(a, guest_image)
    seen: list[str] = []
    try:
        for source, dest in ((a, b), (b, a), (a, b)):
            await migrate(source, dest, vm_id, maxBandwidth=1000)
            seen.append(read(serial_of(source, vm_id)))  # before a later arrival truncates it
            before = len(ticks(read(serial_of(dest, vm_id))))
            await wait_until(
                lambda d=dest, n=before: len(ticks(read(serial_of(d, vm_id)))) > n + 1,
                20,
                "ticks on the destination",
            )
            assert vm_id not in source.domains() and dest.domains()[vm_id] == 1
            await source.call("VM.destroy", [vm_id])  # the engine removes the Down source VM
        seen.append(read(serial_of(b, vm_id)))
        assert READY_MARKER in seen[0]
        assert all(READY_MARKER not in text for text in seen[1:]), "the guest booted again"
        counted = [n for text in seen for n in ticks(text)]
        merged = [n for i, n in enumerate(counted) if i == 0 or n != counted[i - 1]]
        assert merged == list(range(merged[0], merged[0] + len(merged))), merged
        progress = [event["progress"] for event in a.progress[vm_id]]
        assert progress[-1] == 100
    finally:
        await cleanup(vm_id, a, b)


@pytest_twisted.ensureDeferred
async def test_cancel_in_the_middle_keeps_the_guest_here(pair, guest_image):
    """A slow migration (1 MiB/s) cancelled after it made progress ends cancelled: the guest is
    Up on the source and keeps counting there, and nothing is left on the destination."""
    a, b = pair
    vm_id = await start_guest(a, guest_image)
    try:
        params = {"vmID": vm_id, "params": {"dst": b.dst(), "maxBandwidth": 1}}
        await a.call("VM.migrate", params)
        await wait_until(
            lambda: any(e["progress"] > 0 for e in a.progress.get(vm_id, [])), 30, "progress"
        )
        assert b.states(vm_id) == ["Migration Destination"]
        assert await a.call("VM.migrateCancel", [vm_id]) is True
        await a.wait_last(vm_id, "Up")
        status = await a.call("VM.getMigrationStatus", [vm_id])
        assert status["state"] == "cancelled" and status["status"]["code"] == 12
        await b.wait_last(vm_id, "Down")
        assert b.statuses[vm_id][-1]["exitReason"] == 8
        assert vm_id not in await b.call("Host.getVMList")
        assert vm_id not in b.domains() and a.domains()[vm_id] == 1
        serial = serial_of(a, vm_id)
        count = len(ticks(read(serial)))
        await wait_until(lambda: len(ticks(read(serial))) > count + 1, 10, "ticks after cancel")
    finally:
        await cleanup(vm_id, a, b)


@pytest_twisted.ensureDeferred
async def test_a_vetoing_hook_keeps_the_guest_up(pair, guest_image):
    """before_vm_migrate_source exiting 2 refuses VM.migrate with 1500; the guest stays Up."""
    a, b = pair
    veto = a.hooks / "before_vm_migrate_source" / "50_veto"
    veto.parent.mkdir(parents=True, exist_ok=True)
    veto.write_text("#!/bin/sh\necho 'pinned to this host' >&2\nexit 2\n")
    veto.chmod(0o755)
    vm_id = await start_guest(a, guest_image)
    try:
        with pytest.raises(RemoteError) as refused:
            await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": b.dst()}})
        assert refused.value.code == 1500 and "pinned to this host" in refused.value.message
        assert "Migration Source" not in a.states(vm_id)
        assert vm_id not in b.domains() and a.domains()[vm_id] == 1
    finally:
        shutil.rmtree(veto.parent)
        await cleanup(vm_id, a, b)


@pytest_twisted.ensureDeferred
async def test_a_failing_destination_leaves_the_guest_on_the_source(pair, guest_image):
    """A destination whose hook hands libvirt an incompatible domain (other RAM size) accepts
    VM.migrationCreate, then libvirt refuses the migration: the guest is Up on the source,
    still counting, and the destination's half is gone."""
    a, b = pair
    hook = b.hooks / "before_vm_migrate_destination" / "50_break"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(
        "#!/bin/sh\nsed -i \"s|<memory unit='KiB'>[0-9]*<|<memory unit='KiB'>262144<|\" "
        '"$_hook_domxml"\n'
    )
    hook.chmod(0o755)
    vm_id = await start_guest(a, guest_image)
    try:
        await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": b.dst()}})
        await wait_until(lambda: "Migration Destination" in b.states(vm_id), 30, "prepared")
        await a.wait_last(vm_id, "Up")
        status = await a.call("VM.getMigrationStatus", [vm_id])
        assert status["state"] == "failed" and status["status"]["code"] == 12, status
        await b.wait_last(vm_id, "Down")
        assert vm_id not in b.domains() and a.domains()[vm_id] == 1
        serial = serial_of(a, vm_id)
        count = len(ticks(read(serial)))
        await wait_until(lambda: len(ticks(read(serial))) > count + 1, 10, "still counting")
    finally:
        shutil.rmtree(hook.parent)
        await cleanup(vm_id, a, b)


@pytest_twisted.ensureDeferred
async def test_a_stopped_destination_agent_fails_the_migration(pair, guest_image):
    """With the destination's agent stopped (its libvirt still up), the migration fails before
    libvirt is asked; the guest stays Up on the source."""
    a, b = pair
    vm_id = await start_guest(a, guest_image)
    try:
        await b.stop()
        await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": b.dst()}})
        await a.wait_last(vm_id, "Up")
        status = await a.call("VM.getMigrationStatus", [vm_id])
        assert status["state"] == "failed" and "cannot reach" in status["error"], status
        assert vm_id not in b.domains() and a.domains()[vm_id] == 1
    finally:
        await cleanup(vm_id, a)
