"""The VM container on the in-memory hypervisor with a deterministic clock: lifecycle, failures
injected into the hypervisor, timers, and the one-Down rule."""

from __future__ import annotations

import itertools
import uuid

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from vdsmlike.api import errors
from vdsmlike.virt.errors import HypervisorError
from vdsmlike.virt.memory import MemoryHypervisor
from vdsmlike.vm.container import ContainerConfig, VmContainer
from vdsmlike.vm.states import VmState


class World:
    """A container, its memory hypervisor and clock, and the events it published."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.hv = MemoryHypervisor(reactor=self.clock)
        self.events: list[tuple[str, dict]] = []
        ticks = itertools.count(1)
        self.vms = VmContainer(
            self.hv,
            clock=self.clock,
            publish=lambda event_id, params: self.events.append((event_id, params)),
            event_time=lambda: next(ticks),
            config=ContainerConfig(domain_type="qemu", guest_wait_timeout=60),
        )
        self.hv.set_event_listener(self.vms.on_domain_event)
        self.run(self.hv.open())
        self.run(self.vms.recover())

    def run(self, awaitable):
        """Run a coroutine or Deferred to completion on the clock; :returns: its result."""
        d = Deferred.fromCoroutine(awaitable) if not isinstance(awaitable, Deferred) else awaitable
        results: list = []
        d.addBoth(results.append)
        self.clock.advance(0)
        assert results, "did not finish"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def statuses(self, vm_id: str) -> list[str]:
        return [p[vm_id]["status"] for e, p in self.events if e.endswith(vm_id)]

    def create(self, **extra) -> str:
        params = {"vmId": str(uuid.uuid4()), "vmName": "c-" + uuid.uuid4().hex[:6], "memSize": 64}
        params.update(extra)
        self.run(self.vms.create(None, params))
        self.clock.advance(0)
        return params["vmId"]


@pytest.fixture
def world():
    return World()


def test_started_vm_is_powering_up_then_up_after_the_guest_wait(world):
    """A started VM reports Powering up until the guest wait timeout, then Up."""
    vm_id = world.create()
    assert world.statuses(vm_id) == ["WaitForLaunch", "Powering up"]
    world.clock.advance(59)
    assert world.statuses(vm_id)[-1] == "Powering up"
    world.clock.advance(1)
    assert world.statuses(vm_id)[-1] == "Up"


def test_libvirt_refusing_the_start_leaves_the_vm_down_with_its_message(world):
    """A create that libvirt refuses ends Down once, reason 3, with libvirt's message."""
    world.hv.fail_next("create", HypervisorError("no emulator for arch"))
    vm_id = world.create()
    vm = world.vms.get(vm_id)
    assert world.statuses(vm_id) == ["WaitForLaunch", "Down"]
    assert (int(vm.exit.reason), int(vm.exit.code)) == (3, 1)
    assert "no emulator" in vm.exit.message
    assert world.hv.domains == {}


def test_a_crashed_vm_stays_listed_down_until_destroyed(world):
    """A crash is one Down with an error; VM.destroy then removes the VM without a second Down."""
    vm_id = world.create()
    world.hv.crash(vm_id)
    world.clock.advance(0)
    assert world.vms.get(vm_id).state == VmState.DOWN
    assert int(world.vms.get(vm_id).exit.code) == 1
    assert world.run(world.vms.destroy(vm_id)) is True
    assert world.statuses(vm_id).count("Down") == 1
    with pytest.raises(errors.NoSuchVM):
        world.vms.get(vm_id)
    assert world.clock.getDelayedCalls() == []


def test_ignored_shutdown_gives_up_and_reports_up_again(world):
    """Without force, a guest that ignores the power-off request is Up again after the timeout."""
    vm_id = world.create()
    world.clock.advance(60)
    world.hv.guest_ignores_shutdown(vm_id)
    world.run(world.vms.shutdown(vm_id, timeout=30))
    assert world.statuses(vm_id)[-1] == "Powering down"
    world.clock.advance(30)
    assert world.statuses(vm_id)[-1] == "Up"
    assert vm_id in world.hv.domains


def test_ignored_shutdown_with_force_destroys_the_vm(world):
    """With force, a guest that ignores the power-off request is destroyed: Down, reason 6."""
    vm_id = world.create()
    world.clock.advance(60)
    world.hv.guest_ignores_shutdown(vm_id)
    world.run(world.vms.shutdown(vm_id, timeout=30, force=True))
    world.clock.advance(30)
    world.clock.advance(0)
    vm = world.vms.get(vm_id)
    assert vm.state == VmState.DOWN and int(vm.exit.reason) == 6
    assert world.statuses(vm_id).count("Down") == 1
    assert vm_id not in world.hv.domains


def test_a_failing_pause_reports_libvirts_error_and_changes_nothing(world):
    """When libvirt fails a pause, the caller gets code 16 with its message; the VM stays Up."""
    vm_id = world.create()
    world.clock.advance(60)
    world.hv.fail_next("suspend", HypervisorError("monitor is busy"))
    with pytest.raises(errors.UnexpectedError, match="monitor is busy"):
        world.run(world.vms.pause(vm_id))
    assert world.vms.get(vm_id).state == VmState.UP


def test_a_destroy_libvirt_cannot_do_keeps_the_vm_listed(world):
    """If neither graceful nor forced destroy works, the caller gets 42 and the VM stays."""
    vm_id = world.create()
    world.hv.fail_next("destroy", HypervisorError("device busy"))
    world.hv.fail_next("destroy", HypervisorError("device busy"))
    with pytest.raises(errors.DestroyError, match="device busy"):
        world.run(world.vms.destroy(vm_id))
    assert world.vms.get(vm_id).state == VmState.POWERING_UP
    assert "Down" not in world.statuses(vm_id)
    assert world.run(world.vms.destroy(vm_id)) is True


def test_balloon_target_survives_in_the_domain_metadata(world):
    """The balloon target is stored in the domain, where a restarted agent finds it."""
    vm_id = world.create(memSize=256)
    world.run(world.vms.set_balloon_target(vm_id, 131072))
    restarted = World.__new__(World)
    restarted.__dict__.update(world.__dict__)
    restarted.events = []
    restarted.vms = VmContainer(
        world.hv, clock=world.clock, publish=lambda *a: None, event_time=lambda: 1
    )
    restarted.run(restarted.vms.recover())
    assert restarted.vms.get(vm_id).metadata.balloon_target == 131072
    assert restarted.vms.get(vm_id).state == VmState.UP


def test_cont_on_a_running_vm_is_refused(world):
    """VM.cont on a VM that is not paused answers error 16 and changes nothing."""
    vm_id = world.create()
    with pytest.raises(errors.UnexpectedError, match="not paused"):
        world.run(world.vms.cont(vm_id))


class FakeHookRunner:
    """Scripted stand-in for IHookRunner: records calls, rewrites or vetoes as told."""

    def __init__(self, *, veto: set[str] = frozenset(), rewrite=None, launch_flags=None):
        self.calls: list[str] = []
        self.params: dict[str, list] = {}
        self.veto = veto
        self.rewrite = rewrite or {}
        self.launch_flags = launch_flags

    def run(self, point, payload, *, vm_id=None, custom=None, params=None):
        from types import SimpleNamespace

        from twisted.internet.defer import fail, succeed

        self.calls.append(point)
        self.params.setdefault(point, []).append(params)
        if point in self.veto:
            return fail(errors.HookError("10_veto: not today"))
        payload = self.rewrite.get(point, lambda p: p)(payload)
        return succeed(SimpleNamespace(payload=payload, launch_flags=self.launch_flags))

    def installed(self):
        return {}


def hooked_world(hooks) -> World:
    world = World()
    world.vms._hooks = hooks
    return world


def test_before_vm_start_veto_leaves_no_domain_and_reports_the_hook_error():
    """A vetoing before_vm_start hook ends the VM Down with the hook's message; no domain."""
    world = hooked_world(FakeHookRunner(veto={"before_vm_start"}))
    vm_id = world.create()
    vm = world.vms.get(vm_id)
    assert world.statuses(vm_id) == ["WaitForLaunch", "Down"]
    assert "Hook Error" in vm.exit.message and "not today" in vm.exit.message
    assert world.hv.domains == {}


def test_the_xml_a_hook_writes_is_what_the_hypervisor_starts():
    """The domain XML after before_vm_start hooks is the XML the hypervisor is given."""
    tag = "</name><description>set by a hook</description>"
    hooks = FakeHookRunner(rewrite={"before_vm_start": lambda x: x.replace("</name>", tag, 1)})
    world = hooked_world(hooks)
    vm_id = world.create()
    assert "set by a hook" in world.run(world.hv.get_xml(vm_id))
    assert hooks.calls[:2] == ["before_vm_start", "after_vm_start"]


def test_launch_flags_from_a_hook_start_the_vm_paused():
    """A before_vm_start hook asking for START_PAUSED makes the VM start Paused."""
    world = hooked_world(FakeHookRunner(launch_flags=1))
    vm_id = world.create()
    assert world.statuses(vm_id) == ["WaitForLaunch", "Paused"]


def test_pause_veto_keeps_the_vm_running_and_destroy_hooks_always_run():
    """A before_vm_pause veto is error 1500 with the VM still running; destroy runs its hooks."""
    hooks = FakeHookRunner(veto={"before_vm_pause"})
    world = hooked_world(hooks)
    vm_id = world.create()
    with pytest.raises(errors.HookError, match="not today"):
        world.run(world.vms.pause(vm_id))
    assert world.vms.get(vm_id).state == VmState.POWERING_UP
    world.run(world.vms.destroy(vm_id))
    assert hooks.calls[-2:] == ["before_vm_destroy", "after_vm_destroy"]


def test_destroy_during_before_vm_start_hooks_leaves_no_domain():
    """A VM destroyed while its before_vm_start hooks run is never started afterwards."""
    from types import SimpleNamespace

    gate: Deferred = Deferred()

    class SlowStartHooks(FakeHookRunner):
        def run(self, point, payload, **kwargs):
            if point == "before_vm_start":
                self.calls.append(point)
                return gate.addCallback(
                    lambda _: SimpleNamespace(payload=payload, launch_flags=None)
                )
            return super().run(point, payload, **kwargs)

    world = hooked_world(SlowStartHooks())
    vm_id = world.create()
    assert world.run(world.vms.destroy(vm_id)) is True
    gate.callback(None)
    world.clock.advance(0)
    assert world.hv.domains == {}
    assert world.statuses(vm_id) == ["WaitForLaunch", "Down"]


def test_unreadable_launch_paused_is_refused_before_anything_starts(world):
    """A launchPaused that is not a boolean is error 91, and no VM is registered."""
    params = {"vmId": str(uuid.uuid4()), "vmName": "lp", "memSize": 64, "launchPaused": "maybe"}
    with pytest.raises(errors.InvalidParameter, match="launchPaused"):
        world.run(world.vms.create(None, params))
    assert world.vms.vms() == [] and world.hv.domains == {}


MAC, OTHER_MAC = "52:54:00:00:0c:01", "52:54:00:00:0c:02"
CUSTOM_NICS = [
    {"macAddr": MAC, "network": "default", "custom": {"mtu": "9000"}},
    {"macAddr": OTHER_MAC, "network": "default"},
]


def test_device_create_hooks_see_custom_devices_and_their_edits_are_started():
    """before_device_create runs once per device with custom properties, with them as params,
    before before_vm_start; its edit of the device is in the domain the hypervisor starts."""
    edit = {"before_device_create": lambda x: x.replace("virtio", "e1000")}
    hooks = FakeHookRunner(rewrite=edit)
    world = hooked_world(hooks)
    vm_id = world.create(nics=CUSTOM_NICS)
    assert hooks.calls == [
        "before_device_create",
        "before_vm_start",
        "after_device_create",
        "after_vm_start",
    ]
    assert hooks.params["before_device_create"] == [{"mtu": "9000"}]
    xml = world.run(world.hv.get_xml(vm_id))
    assert xml.count("e1000") == 1 and xml.count("virtio") >= 1
    devices = xml.split("<devices>")[1]
    assert "e1000" in devices.split(MAC)[1].split("</interface>")[0]


def test_device_create_veto_leaves_no_domain():
    """A failing before_device_create hook ends the VM Down with the hook's message, unstarted."""
    world = hooked_world(FakeHookRunner(veto={"before_device_create"}))
    vm_id = world.create(nics=CUSTOM_NICS)
    assert world.statuses(vm_id) == ["WaitForLaunch", "Down"]
    assert "not today" in world.vms.get(vm_id).exit.message
    assert world.hv.domains == {}


def test_device_destroy_hooks_run_around_destroy_and_never_stop_it():
    """Destroy runs before/after_device_destroy for custom devices; a failing one is logged."""
    hooks = FakeHookRunner(veto={"before_device_destroy"})
    world = hooked_world(hooks)
    vm_id = world.create(nics=CUSTOM_NICS)
    assert world.run(world.vms.destroy(vm_id)) is True
    assert hooks.calls[-4:] == [
        "before_vm_destroy",
        "before_device_destroy",
        "after_device_destroy",
        "after_vm_destroy",
    ]
    assert hooks.params["after_device_destroy"] == [{"mtu": "9000"}]
    assert world.hv.domains == {}


def test_a_vm_without_device_custom_properties_runs_no_device_hooks():
    """Devices without custom properties never reach the device_create/destroy points."""
    hooks = FakeHookRunner()
    world = hooked_world(hooks)
    vm_id = world.create(nics=CUSTOM_NICS[1:])
    world.run(world.vms.destroy(vm_id))
    assert not [c for c in hooks.calls if "device" in c]


def test_nic_custom_properties_reach_plug_hooks_and_live_in_metadata_until_unplug():
    """A hotplugged NIC's custom properties go to its hooks and into the VM's metadata; an
    unplugged NIC's hooks see its properties, which are then dropped from the metadata."""
    hooks = FakeHookRunner()
    world = hooked_world(hooks)
    vm_id = world.create(nics=CUSTOM_NICS[:1])
    nic = {"macAddr": OTHER_MAC, "network": "default", "custom": {"queues": "4"}}
    world.run(world.vms.hotplug(vm_id, {"nic": nic}, "nic"))
    assert hooks.params["before_nic_hotplug"] == [{"queues": "4"}]
    expected = {MAC: {"mtu": "9000"}, OTHER_MAC: {"queues": "4"}}
    assert world.vms.get(vm_id).metadata.device_custom == expected
    world.run(world.vms.hotunplug(vm_id, {"nic": {"macAddr": MAC.upper()}}, "nic"))
    assert hooks.params["after_nic_hotunplug"] == [{"mtu": "9000"}]
    assert world.vms.get(vm_id).metadata.device_custom == {OTHER_MAC: {"queues": "4"}}
