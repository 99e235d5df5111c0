"""LibvirtHypervisor on libvirt's simulated hypervisor (``test:///default`` and a node file)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from contracts.hypervisor import HypervisorContract, wait_until
from guests import bare_xml
from twisted.internet import reactor

from vdsmlike.virt.events import DomainState, LifecycleEvent
from vdsmlike.virt.libvirt import LibvirtHypervisor
from vdsmlike.virt.libvirt_convert import as_test_domain
from vdsmlike.virt.runner import ThreadPoolRunner

NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
    <active>2</active><mhz>3000</mhz><model>vl-test-cpu</model></cpu>
  <memory>4194304</memory>
</node>
"""


async def open_hypervisor(uri: str) -> tuple[LibvirtHypervisor, ThreadPoolRunner]:
    """Open ``uri`` with a fresh thread-pool runner."""
    runner = ThreadPoolRunner(reactor, max_threads=4)
    runner.start()
    hypervisor = LibvirtHypervisor(uri, runner, reactor)
    await hypervisor.open()
    return hypervisor, runner


async def close_hypervisor(hypervisor: LibvirtHypervisor, runner: ThreadPoolRunner) -> None:
    """Destroy the domains the tests made, close, and stop the runner."""
    for domain in await hypervisor.list_domains():
        if domain.name.startswith("vl-test-"):
            await hypervisor.destroy(domain.vm_id, False)
    await hypervisor.close()
    await runner.stop()


class TestLibvirtTestDriver(HypervisorContract):
    """The IHypervisor contract on ``test:///default``."""

    @pytest_twisted.async_yield_fixture
    async def hypervisor(self) -> Any:
        hypervisor, runner = await open_hypervisor("test:///default")
        yield hypervisor
        await close_hypervisor(hypervisor, runner)

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        return bare_xml(name=name, vm_id=vm_id)

    @pytest_twisted.ensureDeferred
    async def test_preexisting_domain(self, hypervisor: LibvirtHypervisor) -> None:
        """The default test host already runs a domain named 'test', listed like ours."""
        names = {d.name: d for d in await hypervisor.list_domains()}
        assert names["test"].state == DomainState.RUNNING

    @pytest_twisted.ensureDeferred
    async def test_stats_filled_from_info(self, hypervisor: LibvirtHypervisor) -> None:
        """The test driver's state-only stats are completed from the domain info."""
        vm_id = (await self.start(hypervisor)).vm_id
        stats = (await hypervisor.bulk_stats())[vm_id]
        assert stats["balloon.maximum"] == 128 * 1024
        assert stats["vcpu.current"] == 1

    @pytest_twisted.ensureDeferred
    async def test_reboot_reports_event(self, hypervisor: LibvirtHypervisor) -> None:
        """reboot keeps the domain running."""
        vm_id = (await self.start(hypervisor)).vm_id
        await hypervisor.reboot(vm_id)
        await hypervisor.reset(vm_id)
        states = {d.vm_id: d.state for d in await hypervisor.list_domains()}
        assert states[vm_id] == DomainState.RUNNING

    @pytest_twisted.ensureDeferred
    async def test_events_stop_after_close(self, hypervisor: LibvirtHypervisor) -> None:
        """Events arrive only while connected: create reports STARTED."""
        vm_id = (await self.start(hypervisor)).vm_id
        await wait_until(lambda: self.events_of(vm_id))
        assert self.events_of(vm_id)[0][0] == LifecycleEvent.STARTED


@pytest_twisted.ensureDeferred
async def test_node_file_host(tmp_path: Path) -> None:
    """A ``test:///<file>`` host describes the node its file gives."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    hypervisor, runner = await open_hypervisor(f"test://{node}")
    try:
        info = await hypervisor.host_info()
        assert (info.cpus, info.cpu_mhz, info.memory_kib) == (2, 3000, 4194304)
        vm_id = str(uuid.uuid4())
        await hypervisor.create(bare_xml(vm_id=vm_id), False)
        assert [d.vm_id for d in await hypervisor.list_domains()] == [vm_id]
    finally:
        await close_hypervisor(hypervisor, runner)


def test_as_test_domain() -> None:
    """Only the root element's type attribute is rewritten to 'test'."""
    xml = "<domain id='1' type=\"kvm\"><devices><disk type='file'/></devices></domain>"
    assert (
        as_test_domain(xml)
        == "<domain id='1' type=\"test\"><devices><disk type='file'/></devices></domain>"
    )


@pytest.mark.parametrize("uri", ["test:///nonexistent/node.xml"])
@pytest_twisted.ensureDeferred
async def test_open_failure(uri: str) -> None:
    """Opening a URI libvirt refuses fails with HypervisorError."""
    from contracts.hypervisor import failure_of

    from vdsmlike.virt.errors import HypervisorError

    runner = ThreadPoolRunner(reactor)
    runner.start()
    try:
        await failure_of(LibvirtHypervisor(uri, runner, reactor).open(), HypervisorError)
    finally:
        await runner.stop()


def test_failure_after_start_cleans_up() -> None:
    """If reading a just-created domain fails, the domain is destroyed before the error."""
    from vdsmlike.virt.errors import HypervisorError
    from vdsmlike.virt.runner import SynchronousRunner

    hypervisor = LibvirtHypervisor("test:///default", SynchronousRunner(), reactor)
    hypervisor.open()
    describe = hypervisor._domain_info

    def broken(dom: Any) -> Any:
        raise HypervisorError("lost the domain")

    vm_id = str(uuid.uuid4())
    hypervisor._domain_info = broken  # type: ignore[method-assign]
    failures: list[Any] = []
    hypervisor.create(bare_xml(vm_id=vm_id), True).addErrback(failures.append)
    hypervisor._domain_info = describe  # type: ignore[method-assign]
    listed: list[Any] = []
    hypervisor.list_domains().addCallback(listed.extend)
    hypervisor.close()
    assert failures and failures[0].check(HypervisorError)
    assert vm_id not in {d.vm_id for d in listed}
