"""The migration jobs on a deterministic clock: the in-memory hypervisor (emulating), a real
container, and a scripted destination agent; no network, no threads.

What the agent-level tests cannot show step by step: the retry after a busy destination, cancel
in each phase, the convergence schedule applied sample by sample, and the destination's timeout.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from guests import bare_xml
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from hooks.runner import HookResult
from vdsmlike.api import errors
from vdsmlike.client import RemoteError
from vdsmlike.virt.memory import MemoryHypervisor
from vdsmlike.vm.container import ContainerConfig, VmContainer
from vdsmlike.vm.migration import MigrationSettings
from vdsmlike.vm.migration_jobs import MigrationJobs

MIB = 1024 * 1024
SETTINGS = MigrationSettings(monitor_interval=1.0, retry_timeout=10.0, destination_timeout=300)


class Hooks:
    """Records hook runs; ``veto`` makes a point fail, ``edit`` rewrites its payload."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.veto: dict[str, str] = {}
        self.edit: dict[str, Any] = {}

    def run(self, point, payload, *, vm_id=None, custom=None, params=None):
        self.runs.append(point)
        if point in self.veto:
            return fail(errors.HookError(self.veto[point]))
        return succeed(HookResult(self.edit.get(point, lambda p: p)(payload)))

    def installed(self):
        return {}


class Link:
    """A scripted destination agent: answers per verb, in order; records the calls."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []
        self.closed = False

    def call(self, method: str, params: Any = None, *, timeout: float | None = None) -> Deferred:
        self.calls.append((method, params))
        queue = self.answers.get(method, [])
        answer = queue.pop(0) if queue else True
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def close(self) -> Deferred:
        self.closed = True
        return succeed(None)

    def verbs(self) -> list[str]:
        return [method for method, _ in self.calls]


class Connector:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.urls: list[tuple[str, str | None]] = []

    def connect(self, url: str, token: str | None) -> Deferred:
        self.urls.append((url, token))
        return succeed(self.link)


def created(vm_id: str, xml: str = "<domain/>") -> dict:
    """A destination's answer to VM.migrationCreate."""
    return {
        "params": {
            "vmId": vm_id,
            "status": "Migration Destination",
            "xml": xml,
            "libvirtUri": "test:///b",
            "emulated": True,
        },
        "migrationPort": 0,
    }


class Host:
    """A container and its migration jobs on one clock, with a scripted destination."""

    def __init__(self, settings: MigrationSettings = SETTINGS, answers: dict | None = None) -> None:
        self.clock = Clock()
        self.hv = MemoryHypervisor(reactor=self.clock)
        self.hooks = Hooks()
        self.events: list[tuple[str, dict]] = []
        ticks = itertools.count(1)
        publish = lambda event_id, params: self.events.append((event_id, params))  # noqa: E731
        self.vms = VmContainer(
            self.hv,
            clock=self.clock,
            publish=publish,
            event_time=lambda: next(ticks),
            config=ContainerConfig(domain_type="qemu", guest_wait_timeout=1),
            hooks=self.hooks,
        )
        self.link = Link(answers or {})
        self.connector = Connector(self.link)
        self.jobs = MigrationJobs(
            self.vms,
            self.hv,
            self.hooks,
            connector=self.connector,
            clock=self.clock,
            publish=publish,
            settings=settings,
            serial_dir="/dst/serial",
            token="t0k",
        )
        self.hv.set_event_listener(self.vms.on_domain_event)
        self.run(self.vms.recover())

    def run(self, awaitable: Any) -> Any:
        d = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)
        results: list = []
        d.addBoth(results.append)
        self.clock.advance(0)
        assert results, "did not finish"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def up(self, memory_mib: int = 64) -> str:
        vm_id = str(uuid.uuid4())
        self.run(self.vms.create(None, {"xml": bare_xml(vm_id=vm_id, memory_mib=memory_mib)}))
        self.clock.advance(0)
        self.clock.advance(1)
        assert self.statuses(vm_id)[-1] == "Up"
        return vm_id

    def statuses(self, vm_id: str) -> list[str]:
        return [p[vm_id]["status"] for e, p in self.events if e == f"|virt|VM_status|{vm_id}"]

    def progress(self, vm_id: str) -> list[dict]:
        return [p[vm_id] for e, p in self.events if e == f"|virt|VM_migration_status|{vm_id}"]

    def state(self, vm_id: str) -> str:
        return self.jobs.status(vm_id)["state"]

    def advance(self, seconds: float, step: float = 0.05) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)


def test_a_busy_destination_is_asked_again_after_the_retry_timeout():
    """82 from the destination: the VM waits (progress 0) and is offered again retry_timeout
    later; then it migrates, goes Down (4), and the destination is told it finished."""
    host = Host()
    vm_id = host.up()
    busy = RemoteError(82, "Incoming migration limit exceeded")
    host.link.answers["VM.migrationCreate"] = [busy, created(vm_id)]
    assert host.run(host.jobs.migrate(vm_id, {"dst": "b:1", "maxBandwidth": 64})) is True
    assert host.state(vm_id) == "waiting" and host.link.verbs() == ["VM.migrationCreate"]
    host.clock.advance(9.9)
    assert host.link.verbs() == ["VM.migrationCreate"]
    host.clock.advance(0.1)
    assert host.link.verbs() == ["VM.migrationCreate"] * 2 and host.state(vm_id) == "migrating"
    host.advance(2)
    assert host.statuses(vm_id)[-2:] == ["Migration Source", "Down"]
    assert host.vms.get(vm_id).exit.reason == 4
    assert host.link.verbs()[-1] == "VM.migrationFinish" and host.link.closed
    assert host.progress(vm_id)[-1] == {"progress": 100, "postcopy": False}
    assert host.hooks.runs[-1] == "after_vm_migrate_source"
    assert host.jobs.slots.outgoing.holders == []


def test_what_the_source_sends():
    """The destination gets the source hook's XML, the VM's id, the emulation flag, the
    incoming limit; the link uses dstToken, else the agent's own token."""
    host = Host()
    vm_id = host.up()
    host.hooks.edit["before_vm_migrate_source"] = lambda xml: xml.replace(
        "<devices>", "<devices><!--hooked-->"
    )
    host.link.answers["VM.migrationCreate"] = [created(vm_id)]
    params = {"dst": "b", "incomingLimit": 3, "dstToken": "other"}
    host.run(host.jobs.migrate(vm_id, params))
    method, sent = host.link.calls[0]
    assert method == "VM.migrationCreate" and sent["vmID"] == vm_id and sent["incomingLimit"] == 3
    assert "<!--hooked-->" in sent["params"]["_srcDomXML"] and sent["params"]["emulated"] is True
    assert host.connector.urls == [("ws://b:54321/jsonrpc", "other")]


def test_cancel_while_waiting_for_a_retry():
    """Cancelling during the retry wait ends the job cancelled at once; the VM is Up and
    nothing is cleaned up on a destination that never prepared."""
    host = Host()
    vm_id = host.up()
    host.link.answers["VM.migrationCreate"] = [RemoteError(82, "busy")]
    host.run(host.jobs.migrate(vm_id, {"dst": "b"}))
    assert host.jobs.cancel(vm_id) is True
    host.clock.advance(0)
    assert host.state(vm_id) == "cancelled"
    assert host.statuses(vm_id)[-2:] == ["Migration Source", "Up"]
    assert host.link.verbs() == ["VM.migrationCreate"]
    host.clock.advance(60)
    assert host.link.verbs() == ["VM.migrationCreate"]
    with pytest.raises(errors.MigrationCancelError):
        host.jobs.cancel(vm_id)


def test_cancel_while_the_destination_prepares_cleans_it_up():
    """A cancel during VM.migrationCreate waits for its answer, then destroys the prepared VM
    on the destination."""
    host = Host()
    vm_id = host.up()
    answer: Deferred = Deferred()
    host.link.answers["VM.migrationCreate"] = [answer]
    host.run(host.jobs.migrate(vm_id, {"dst": "b"}))
    host.jobs.cancel(vm_id)
    assert host.state(vm_id) == "preparing"
    answer.callback(created(vm_id))
    host.clock.advance(0)
    assert host.state(vm_id) == "cancelled"
    assert host.link.verbs() == ["VM.migrationCreate", "VM.destroy"]
    assert host.hv.domains[vm_id].state.name == "RUNNING"


def test_cancel_while_migrating_aborts_the_job():
    """A cancel during the transfer aborts it; the VM is Up, the destination cleaned up."""
    host = Host()
    vm_id = host.up()
    host.link.answers["VM.migrationCreate"] = [created(vm_id)]
    host.run(host.jobs.migrate(vm_id, {"dst": "b", "maxBandwidth": 1}))
    host.advance(3)
    assert host.state(vm_id) == "migrating" and host.progress(vm_id)[-1]["progress"] > 0
    host.jobs.cancel(vm_id)
    host.clock.advance(0)
    status = host.jobs.status(vm_id)
    assert status["state"] == "cancelled" and "canceled by client" in status["error"]
    assert host.statuses(vm_id)[-1] == "Up" and host.link.verbs()[-1] == "VM.destroy"


def test_the_schedule_is_applied_sample_by_sample():
    """Each monitor sample goes through the schedule: init 100 ms, a stall 150 ms, then the
    abort; the status keeps the reason and the last downtime."""
    host = Host()
    vm_id = host.up(memory_mib=32)
    host.hv.set_emulated_dirty_rate(vm_id, 200 * MIB)
    host.link.answers["VM.migrationCreate"] = [created(vm_id)]
    schedule = {
        "init": [{"name": "setDowntime", "params": ["100"]}],
        "stalling": [
            {"limit": 0, "action": {"name": "setDowntime", "params": ["150"]}},
            {"limit": -1, "action": {"name": "abort"}},
        ],
    }
    host.run(
        host.jobs.migrate(vm_id, {"dst": "b", "maxBandwidth": 32, "convergenceSchedule": schedule})
    )
    host.advance(20)
    status = host.jobs.status(vm_id)
    assert status["state"] == "failed" and status["downtime"] == 150
    assert "convergence schedule" in status["error"]
    downtimes = [p.get("downtime") for p in host.progress(vm_id)]
    assert downtimes.index(100) < downtimes.index(150)
    assert host.statuses(vm_id)[-1] == "Up"


def test_a_vetoing_source_hook_refuses_the_verb():
    """before_vm_migrate_source failing makes migrate raise 1500; the VM stays Up."""
    host = Host()
    vm_id = host.up()
    host.hooks.veto["before_vm_migrate_source"] = "no"
    with pytest.raises(errors.HookError):
        host.run(host.jobs.migrate(vm_id, {"dst": "b"}))
    assert host.statuses(vm_id)[-1] == "Up" and host.link.calls == []
    assert host.jobs.status(vm_id)["state"] == "none"


# -- the destination side -------------------------------------------------------------------


def incoming_params(vm_id: str) -> dict:
    xml = bare_xml(vm_id=vm_id).replace(
        "<devices>", "<devices><serial type='file'><source path='/src/s.log'/></serial>"
    )
    return {"_srcDomXML": xml, "emulated": True}


def test_an_incoming_vm_waits_then_arrives():
    """migrationCreate registers the VM in Migration Destination with its serial log moved
    here, takes a slot, and prepares the domain; migrationFinish makes it Up."""
    host = Host()
    vm_id = str(uuid.uuid4())
    answer = host.run(host.jobs.create_incoming(vm_id, incoming_params(vm_id)))
    assert answer["migrationPort"] == 0 and answer["params"]["libvirtUri"] == "memory:///"
    assert f"/dst/serial/{vm_id}.log" in answer["params"]["xml"]
    assert host.statuses(vm_id) == ["Migration Destination"]
    assert host.jobs.slots.incoming.holders == [vm_id]
    assert host.hv.domains[vm_id].state.name == "PAUSED"
    assert host.run(host.jobs.finish_incoming(vm_id)) is True
    host.clock.advance(0)
    assert host.statuses(vm_id) == ["Migration Destination", "Up"]
    assert host.hooks.runs[-1] == "after_vm_migrate_destination"
    assert host.jobs.slots.incoming.holders == []
    assert host.run(host.jobs.finish_incoming(vm_id)) is True  # asking again is harmless


def test_the_incoming_limit_refuses_with_82():
    """Beyond the incoming limit migrationCreate answers 82; a source's incomingLimit raises
    the limit first."""
    host = Host(MigrationSettings(max_incoming=1))
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    host.run(host.jobs.create_incoming(first, incoming_params(first)))
    with pytest.raises(errors.MigrationLimit):
        host.run(host.jobs.create_incoming(second, incoming_params(second)))
    assert second not in {vm.vm_id for vm in host.vms.vms()}
    host.run(host.jobs.create_incoming(second, incoming_params(second), 2))
    assert host.statuses(second) == ["Migration Destination"]


def test_an_incoming_vm_that_never_arrives_times_out():
    """After destination_timeout the incoming VM is Down (8), its domain destroyed, its slot
    given back."""
    host = Host()
    vm_id = str(uuid.uuid4())
    host.run(host.jobs.create_incoming(vm_id, incoming_params(vm_id)))
    host.clock.advance(299)
    assert host.statuses(vm_id) == ["Migration Destination"]
    host.clock.advance(1)
    host.clock.advance(0)
    assert host.statuses(vm_id) == ["Migration Destination", "Down"]
    assert host.vms.get(vm_id).exit.reason == 8
    assert vm_id not in host.hv.domains and host.jobs.slots.incoming.holders == []


def test_a_destination_hook_veto_leaves_nothing():
    """before_vm_migrate_destination failing refuses with 1500 and leaves no VM and no slot."""
    host = Host()
    host.hooks.veto["before_vm_migrate_destination"] = "not here"
    vm_id = str(uuid.uuid4())
    with pytest.raises(errors.HookError):
        host.run(host.jobs.create_incoming(vm_id, incoming_params(vm_id)))
    assert host.vms.vms() == [] and host.jobs.slots.incoming.holders == []
    assert host.hv.domains == {}


def test_a_source_destroy_ends_the_incoming_vm_as_failed():
    """The source's VM.destroy after a failure ends the incoming VM Down with reason 8."""
    host = Host()
    vm_id = str(uuid.uuid4())
    host.run(host.jobs.create_incoming(vm_id, incoming_params(vm_id)))
    host.run(host.vms.destroy(vm_id))
    assert host.statuses(vm_id) == ["Migration Destination", "Down"]
    assert [p[vm_id]["exitReason"] for e, p in host.events if p[vm_id]["status"] == "Down"] == [8]
    assert host.jobs.slots.incoming.holders == [] and host.hv.domains == {}
