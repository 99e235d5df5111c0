"""The ILiveMigration contract on both emulating adapters: MemoryHypervisor and
LibvirtHypervisor on the test driver (``test:///<node.xml>``)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from contracts.migration import LiveMigrationContract
from guests import bare_xml
from twisted.internet import reactor

from vdsmlike.virt.libvirt import LibvirtHypervisor
from vdsmlike.virt.memory import MemoryHypervisor
from vdsmlike.virt.runner import ThreadPoolRunner

NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
    <active>2</active><mhz>3000</mhz><model>vl-mig-cpu</model></cpu>
  <memory>4194304</memory>
</node>
"""


class TestMemoryLiveMigration(LiveMigrationContract):
    """The contract on MemoryHypervisor, on the real reactor."""

    @pytest_twisted.async_yield_fixture
    async def hypervisor(self) -> Any:
        hypervisor = MemoryHypervisor(reactor)
        await hypervisor.open()
        yield hypervisor
        for domain in await hypervisor.list_domains():
            await hypervisor.destroy(domain.vm_id, False)
        await hypervisor.close()

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        return bare_xml(name=name, vm_id=vm_id)


class TestTestDriverLiveMigration(LiveMigrationContract):
    """The contract on libvirt's test driver, which the adapter emulates migration for."""

    @pytest_twisted.async_yield_fixture
    async def hypervisor(self, tmp_path) -> Any:
        node = tmp_path / "node.xml"
        node.write_text(NODE_XML)
        runner = ThreadPoolRunner(reactor, max_threads=4)
        runner.start()
        hypervisor = LibvirtHypervisor(f"test://{node}", runner, reactor)
        await hypervisor.open()
        yield hypervisor
        for domain in await hypervisor.list_domains():
            if domain.name.startswith("vl-test-"):
                await hypervisor.destroy(domain.vm_id, False)
        await hypervisor.close()
        await runner.stop()

    def new_xml(self, *, name: str | None = None, vm_id: str | None = None) -> str:
        return bare_xml(name=name, vm_id=vm_id)
