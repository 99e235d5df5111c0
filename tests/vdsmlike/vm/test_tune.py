"""VmTuning on the in-memory hypervisor: VDSM's CPU tune, ioTune, policy and KSM verbs, their
errors, what VM stats report, and changes to one VM running one at a time."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from vdsmlike.api import errors
from vdsmlike.host.ksm import KsmSysfs
from vdsmlike.virt.errors import DomainNotFound, HypervisorError
from vdsmlike.virt.events import CpuTune
from vdsmlike.virt.memory import MemoryHypervisor
from vdsmlike.virt.runner import SynchronousRunner
from vdsmlike.virt.tuning import IO_TUNE_KEYS
from vdsmlike.vm.container import ContainerConfig, VmContainer
from vdsmlike.vm.domxml import DiskSpec
from vdsmlike.vm.states import VmState
from vdsmlike.vm.tune import TUNE_NS, VmTuning, qos_policy

ZERO = dict.fromkeys(IO_TUNE_KEYS, 0)
QOS = f"""<ovirt-tune:qos xmlns:ovirt-tune="{TUNE_NS}">
  <ovirt-tune:vcpuLimit>40</ovirt-tune:vcpuLimit>
  <ovirt-tune:ioTune>
    <ovirt-tune:device name="vda" path="/images/vda.img">
      <ovirt-tune:maximum><ovirt-tune:total_iops_sec>800</ovirt-tune:total_iops_sec>
        <ovirt-tune:read_bytes_sec>junk</ovirt-tune:read_bytes_sec></ovirt-tune:maximum>
      <ovirt-tune:guaranteed><ovirt-tune:total_iops_sec>100</ovirt-tune:total_iops_sec>
      </ovirt-tune:guaranteed>
    </ovirt-tune:device>
    <ovirt-tune:device name="vdb"/>
  </ovirt-tune:ioTune>
</ovirt-tune:qos>"""


def domain_xml(vm_id: str, *, qos: str = "", disks: tuple[str, ...] = ("vda", "vdb")) -> str:
    """Domain XML with file disks ``/images/<dev>.img``, a CD-ROM and an optional policy."""
    disk_xml = "".join(
        f"<disk type='file' device='disk'><source file='/images/{dev}.img'/>"
        f"<target dev='{dev}' bus='virtio'/></disk>"
        for dev in disks
    )
    return (
        f"<domain type='kvm'><name>t-{vm_id[:8]}</name><uuid>{vm_id}</uuid>"
        f"<memory unit='MiB'>128</memory><vcpu>2</vcpu><metadata>{qos}</metadata>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{disk_xml}"
        "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>"
        "</devices></domain>"
    )


class World:
    """A container on a memory hypervisor and a clock, and VmTuning over them."""

    def __init__(self, tmp_path: Path, hypervisor: Any = None) -> None:
        self.clock = Clock()
        self.hv = hypervisor or MemoryHypervisor(reactor=self.clock)
        ticks = itertools.count(1)
        self.vms = VmContainer(
            self.hv,
            clock=self.clock,
            publish=lambda event_id, params: None,
            event_time=lambda: next(ticks),
            config=ContainerConfig(domain_type="kvm", guest_wait_timeout=60),
        )
        self.hv.set_event_listener(self.vms.on_domain_event)
        self.ksm_dir = tmp_path / "ksm"
        self.ksm_dir.mkdir()
        for knob in ("run", "merge_across_nodes", "pages_to_scan", "sleep_millisecs"):
            (self.ksm_dir / knob).write_text("0\n")
        ksm = KsmSysfs(str(self.ksm_dir), runner=SynchronousRunner())
        self.tuning = VmTuning(self.vms, self.hv, ksm=ksm)

    def start(self) -> None:
        self.run(self.hv.open())
        self.run(self.vms.recover())

    def run(self, awaitable: Any) -> Any:
        """Run a coroutine or Deferred to completion on the clock; :returns: its result."""
        d = Deferred.fromCoroutine(awaitable) if not isinstance(awaitable, Deferred) else awaitable
        results: list = []
        d.addBoth(results.append)
        self.clock.advance(0)
        assert results, "did not finish"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def create(self, **kwargs: Any) -> str:
        vm_id = str(uuid.uuid4())
        self.run(self.vms.create(None, {"xml": domain_xml(vm_id, **kwargs)}))
        self.clock.advance(0)
        return vm_id

    def fails(self, awaitable: Any, error: type[errors.RpcError]) -> errors.RpcError:
        """Run ``awaitable``; :returns: the ``error`` it failed with."""
        with pytest.raises(error) as caught:
            self.run(awaitable)
        return caught.value


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.start()
    return world


# -- CPU tune ---------------------------------------------------------------------------------


def test_quota_and_period_apply_and_show_in_stats(world: World) -> None:
    """setCpuTuneQuota and setCpuTunePeriod change the domain, and VM stats report both."""
    vm_id = world.create()
    assert world.run(world.tuning.set_cpu_tune_quota(vm_id, 50000)) is True
    assert world.run(world.tuning.set_cpu_tune_period(vm_id, 200000)) is True
    assert world.hv.domains[vm_id].cpu_tune == CpuTune(50000, 200000, 2)
    fields = world.tuning.stats_fields(world.vms.get(vm_id))
    assert (fields["vcpuQuota"], fields["vcpuPeriod"]) == (50000, 200000)


def test_quota_reports_what_libvirt_reads_back(world: World) -> None:
    """A negative quota is reported as libvirt keeps it: -1, unlimited."""
    vm_id = world.create()
    world.run(world.tuning.set_cpu_tune_quota(vm_id, "-20"))
    assert world.tuning.stats_fields(world.vms.get(vm_id))["vcpuQuota"] == -1


@pytest.mark.parametrize("value", ["lots", 1.5, True, None, [1]])
def test_quota_and_period_must_be_integers(world: World, value: Any) -> None:
    """A quota or period that is not an integer (or numeric string) is error 62."""
    vm_id = world.create()
    for verb in (world.tuning.set_cpu_tune_quota, world.tuning.set_cpu_tune_period):
        error = world.fails(verb(vm_id, value), errors.CpuTuneError)
        assert error.code == 62 and "an integer is required" in str(error)


def test_libvirt_refusal_is_error_62_with_its_message(world: World) -> None:
    """A quota or period libvirt refuses is error 62 carrying libvirt's message, unchanged."""
    vm_id = world.create()
    error = world.fails(world.tuning.set_cpu_tune_quota(vm_id, 500), errors.CpuTuneError)
    assert "out of range [1000, 17592186044415]" in str(error)
    world.fails(world.tuning.set_cpu_tune_period(vm_id, 10**7), errors.CpuTuneError)
    assert world.hv.domains[vm_id].cpu_tune == CpuTune(-1, 100000, 2)


def test_vanished_domain_is_no_such_vm(world: World) -> None:
    """A VM whose domain is gone from the hypervisor answers 1, not 62."""
    vm_id = world.create()
    world.hv.fail_next("set_cpu_tune", DomainNotFound(vm_id))
    world.fails(world.tuning.set_cpu_tune_quota(vm_id, 5000), errors.NoSuchVM)


# -- which VMs ----------------------------------------------------------------------------------


def test_unknown_vm_is_error_1_for_every_vm_verb(world: World) -> None:
    """Every per-VM tuning verb answers 1 for a VM the host does not have."""
    other = str(uuid.uuid4())
    t = world.tuning
    for awaitable in (
        t.set_cpu_tune_quota(other, 1000),
        t.set_cpu_tune_period(other, 1000),
        t.set_io_tune(other, []),
        t.get_io_tune(other),
    ):
        assert world.fails(awaitable, errors.NoSuchVM).code == 1
    with pytest.raises(errors.NoSuchVM):
        t.get_io_tune_policy(other)


def test_down_vm_is_error_6_but_keeps_its_policy(world: World) -> None:
    """A Down VM cannot be tuned (6), yet its policy is still reported."""
    vm_id = world.create(qos=QOS)
    world.hv.crash(vm_id)
    world.clock.advance(0)
    assert world.vms.get(vm_id).state == VmState.DOWN
    world.fails(world.tuning.set_cpu_tune_quota(vm_id, 5000), errors.VMIsDown)
    world.fails(world.tuning.get_io_tune(vm_id), errors.VMIsDown)
    assert [p.get("name") for p in world.tuning.get_io_tune_policy(vm_id)] == ["vda", "vdb"]
    assert world.run(world.tuning.all_io_tune_policies()) == {vm_id: {}}
    assert world.tuning.stats_fields(world.vms.get(vm_id)) == {"vcpuUserLimit": 40}


def test_external_vm_can_be_read_but_not_changed(tmp_path: Path) -> None:
    """A domain the agent did not create is read-only: changes answer 75, reads work."""
    world = World(tmp_path)
    vm_id = str(uuid.uuid4())
    world.run(world.hv.create(domain_xml(vm_id), False))
    world.start()
    assert world.vms.get(vm_id).external
    world.fails(world.tuning.set_cpu_tune_quota(vm_id, 5000), errors.UnsupportedOperation)
    world.fails(world.tuning.set_io_tune(vm_id, []), errors.UnsupportedOperation)
    assert [d["name"] for d in world.run(world.tuning.get_io_tune(vm_id))] == ["vda", "vdb"]


# -- ioTune -------------------------------------------------------------------------------------


def test_set_io_tune_by_name_and_path_merges_over_current(world: World) -> None:
    """Limits change per disk, found by name or path; keys left out keep their value."""
    vm_id = world.create()
    tune = world.tuning
    assert world.run(tune.set_io_tune(vm_id, [{"name": "vda", "ioTune": {"total_iops_sec": 80}}]))
    world.run(
        tune.set_io_tune(
            vm_id,
            [
                {"name": "vda", "ioTune": {"read_bytes_sec": "4096"}},
                {"path": "/images/vdb.img", "ioTune": {"write_bytes_sec": 9}},
            ],
        )
    )
    assert world.hv.domains[vm_id].io_tune["vda"] == ZERO | {
        "total_iops_sec": 80,
        "read_bytes_sec": 4096,
    }
    assert world.run(tune.get_io_tune(vm_id)) == [
        {"name": "vda", "path": "/images/vda.img", "ioTune": ZERO | {"total_iops_sec": 80,
                                                                     "read_bytes_sec": 4096}},
        {"name": "vdb", "path": "/images/vdb.img", "ioTune": ZERO | {"write_bytes_sec": 9}},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("tunables", "message"),
    [
        ([{"name": "vdz", "ioTune": {}}], "Device vdz not found"),
        ([{"path": "/nope.img", "ioTune": {}}], "Device /nope.img not found"),
        ([{"name": "hdc", "ioTune": {}}], "Device hdc not found"),
        ([{"name": "vda", "ioTune": {"bogus": 1}}], "parameter bogus name is invalid"),
        ([{"name": "vda", "ioTune": {"read_iops_sec": -1}}], "equal or greater than zero"),
        ([{"name": "vda", "ioTune": {"read_iops_sec": "x"}}], "an integer is required"),
        ([{"name": "vda", "ioTune": [1]}], "ioTune must be an object"),
        ([{"name": "vda"}], "ioTune must be an object"),
        (["vda"], "a tunable must be an object"),
        ([{"name": "vda", "ioTune": {"total_bytes_sec": 5, "read_bytes_sec": 3}}],
         "can not be set at the same time"),
        ([{"name": "vdb", "ioTune": {"total_iops_sec": 1}},
          {"name": "vdz", "ioTune": {"total_iops_sec": 1}}], "Device vdz not found"),
    ],
)  # fmt: skip
def test_bad_io_tune_is_error_64_and_changes_nothing(
    world: World, tunables: list, message: str
) -> None:
    """An unknown disk or key, a bad value or a total with a read limit is 64; every tunable is
    checked before the first is applied."""
    vm_id = world.create()
    error = world.fails(world.tuning.set_io_tune(vm_id, tunables), errors.IoTuneError)
    assert error.code == 64 and message in str(error), str(error)
    io_tune = world.hv.domains[vm_id].io_tune
    assert (io_tune["vda"], io_tune["vdb"]) == (ZERO, ZERO)


def test_merge_with_a_total_limit_already_set_is_refused(world: World) -> None:
    """A read limit on a disk that has a total limit must clear the total in the same call."""
    vm_id = world.create()
    world.run(world.tuning.set_io_tune(vm_id, [{"name": "vda", "ioTune": {"total_bytes_sec": 7}}]))
    change = [{"name": "vda", "ioTune": {"read_bytes_sec": 3}}]
    world.fails(world.tuning.set_io_tune(vm_id, change), errors.IoTuneError)
    change[0]["ioTune"]["total_bytes_sec"] = 0
    world.run(world.tuning.set_io_tune(vm_id, change))
    assert world.hv.domains[vm_id].io_tune["vda"] == ZERO | {"read_bytes_sec": 3}


def test_libvirt_refusing_a_limit_is_error_64_with_its_message(world: World) -> None:
    """A limit above libvirt's maximum is 64 with libvirt's message."""
    vm_id = world.create()
    change = [{"name": "vda", "ioTune": {"read_bytes_sec": 10**16}}]
    error = world.fails(world.tuning.set_io_tune(vm_id, change), errors.IoTuneError)
    assert "must be no more than 1000000000000000" in str(error)


def test_changes_to_one_vm_run_one_at_a_time(tmp_path: Path) -> None:
    """A second setIoTune waits for the first, so neither merges over a stale read."""
    hv = GatedHypervisor(Clock())
    world = World(tmp_path, hv)
    world.clock = hv.clock
    world.start()
    vm_id = world.create()
    hv.gated = True
    first = Deferred.fromCoroutine(
        world.tuning.set_io_tune(vm_id, [{"name": "vda", "ioTune": {"read_iops_sec": 1}}])
    )
    second = Deferred.fromCoroutine(
        world.tuning.set_io_tune(vm_id, [{"name": "vda", "ioTune": {"write_iops_sec": 2}}])
    )
    assert len(hv.waiting) == 1, "the second change must not read before the first is done"
    hv.release()
    assert len(hv.waiting) == 1
    hv.release()
    assert first.called and second.called
    assert hv.domains[vm_id].io_tune["vda"] == ZERO | {"read_iops_sec": 1, "write_iops_sec": 2}
    assert world.tuning._locks == {}


class GatedHypervisor(MemoryHypervisor):
    """Holds each ``get_block_io_tune`` answer back until :meth:`release` while ``gated``."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(reactor=clock)
        self.clock = clock
        self.gated = False
        self.waiting: list[tuple[Deferred, Deferred]] = []

    def get_block_io_tune(self, vm_id: str, device: str) -> Deferred:
        answer = super().get_block_io_tune(vm_id, device)
        if not self.gated:
            return answer
        held: Deferred = Deferred()
        self.waiting.append((answer, held))
        return held

    def release(self) -> None:
        answer, held = self.waiting.pop(0)
        answer.chainDeferred(held)


# -- policy -------------------------------------------------------------------------------------


def test_policy_comes_from_the_domain_xml(world: World) -> None:
    """The ioTune policy and vCPU limit are VDSM's <ovirt-tune:qos> in the domain metadata."""
    vm_id = world.create(qos=QOS)
    assert world.tuning.get_io_tune_policy(vm_id) == [
        {"name": "vda", "path": "/images/vda.img", "maximum": {"total_iops_sec": 800},
         "guaranteed": {"total_iops_sec": 100}},
        {"name": "vdb"},
    ]  # fmt: skip
    assert world.tuning.stats_fields(world.vms.get(vm_id))["vcpuUserLimit"] == 40


def test_without_a_policy_the_defaults_apply(world: World) -> None:
    """No qos metadata: an empty policy and a vCPU limit of 100 %."""
    vm_id = world.create()
    assert world.tuning.get_io_tune_policy(vm_id) == []
    assert world.tuning.stats_fields(world.vms.get(vm_id))["vcpuUserLimit"] == 100


@pytest.mark.parametrize(
    "xml",
    [
        "<domain><metadata/></domain>",
        f"<domain><metadata><q:qos xmlns:q='{TUNE_NS}'><q:vcpuLimit>x</q:vcpuLimit></q:qos>"
        "</metadata></domain>",
        f"<domain xmlns:q='{TUNE_NS}'><metadata><q:qos><q:ioTune/></q:qos>",
        f"<domain><q:qos xmlns:q='{TUNE_NS}'><q:vcpuLimit>5</q:vcpuLimit></q:qos></domain>",
    ],
)
def test_odd_policies_read_as_defaults(xml: str) -> None:
    """A policy that is garbled, unparsable or outside <metadata> gives the defaults."""
    policy = qos_policy(xml)
    assert (policy.vcpu_limit, policy.io_tune) == (100, ())


def test_unprefixed_policy_children_are_read() -> None:
    """Children without the namespace prefix (as libvirt's metadata API gives them) count."""
    xml = (
        f"<domain><metadata><qos xmlns='{TUNE_NS}'><vcpuLimit>70</vcpuLimit><ioTune>"
        "<device name='vda'><maximum><read_iops_sec>9</read_iops_sec></maximum></device>"
        "</ioTune></qos></metadata></domain>"
    )
    policy = qos_policy(xml)
    assert policy.vcpu_limit == 70
    assert [d.wire() for d in policy.io_tune] == [{"name": "vda", "maximum": {"read_iops_sec": 9}}]


def test_all_policies_read_missing_limits_and_skip_stopped_vms(world: World) -> None:
    """Every VM is listed: running ones with policy and current limits, Down ones empty."""
    tuned = world.create(qos=QOS)
    plain = world.create(disks=())
    down = world.create()
    world.hv.crash(down)
    world.clock.advance(0)
    world.hv.domains[tuned].io_tune["vdb"] = ZERO | {"write_iops_sec": 3}
    policies = world.run(world.tuning.all_io_tune_policies())
    assert policies[down] == {}
    assert policies[plain] == {"policy": [], "current_values": []}
    assert policies[tuned]["policy"] == world.tuning.get_io_tune_policy(tuned)
    assert policies[tuned]["current_values"] == [
        {"name": "vda", "path": "/images/vda.img", "ioTune": ZERO},
        {"name": "vdb", "path": "/images/vdb.img", "ioTune": ZERO | {"write_iops_sec": 3}},
    ]


def test_unreadable_limits_give_an_empty_entry(world: World) -> None:
    """A VM whose limits libvirt cannot read is listed with {}, the others still answer."""
    broken, fine = world.create(), world.create(disks=())
    world.hv.fail_next("get_block_io_tune", HypervisorError("no throttle group"))
    policies = world.run(world.tuning.all_io_tune_policies())
    assert policies == {broken: {}, fine: {"policy": [], "current_values": []}}


# -- VM stats ---------------------------------------------------------------------------------


def test_stats_read_tuning_once_in_the_background(world: World) -> None:
    """The first stats of a VM start reading its tuning; later ones use what was read."""
    vm_id = world.create()
    world.hv.domains[vm_id].cpu_tune = CpuTune(30000, 100000, 2)
    world.hv.domains[vm_id].io_tune["vdb"] = ZERO | {"read_iops_sec": 4}
    vm = world.vms.get(vm_id)
    fields = world.tuning.stats_fields(vm)
    assert (fields["vcpuQuota"], fields["vcpuPeriod"], fields["vcpuUserLimit"]) == (
        30000,
        100000,
        100,
    )
    assert fields["ioTune"][1] == {
        "name": "vdb",
        "path": "/images/vdb.img",
        "ioTune": ZERO | {"read_iops_sec": 4},
    }
    world.hv.domains[vm_id].cpu_tune = CpuTune(1000, 100000, 2)
    assert world.tuning.stats_fields(vm)["vcpuQuota"] == 30000, "read once, not every poll"


def test_stats_do_not_retry_unreadable_tuning_on_every_poll(world: World) -> None:
    """A VM whose CPU tuning cannot be read reports the defaults, and is not asked again."""
    vm_id = world.create()
    vm = world.vms.get(vm_id)
    world.hv.fail_next("get_cpu_tune", HypervisorError("cgroup CPU controller is not mounted"))
    fields = world.tuning.stats_fields(vm)
    assert "vcpuQuota" not in fields and fields["ioTune"] == []
    world.hv.fail_next("get_cpu_tune", HypervisorError("asked again"))
    world.tuning.stats_fields(vm)
    assert world.hv._failures["get_cpu_tune"], "the second poll must not read again"
    world.hv._failures.clear()
    world.run(world.tuning.set_cpu_tune_quota(vm_id, 2000))
    assert world.tuning.stats_fields(vm)["vcpuQuota"] == 2000


def test_stats_read_a_disk_added_later(world: World) -> None:
    """A disk that appears in the VM (hot-plugged) gets its limits read for the stats."""
    vm_id = world.create(disks=("vda",))
    vm = world.vms.get(vm_id)
    assert [d["name"] for d in world.tuning.stats_fields(vm)["ioTune"]] == ["vda"]
    vm.spec = replace(vm.spec, disks=(*vm.spec.disks, DiskSpec("vdc", "virtio", "/i/vdc.img")))
    world.hv.domains[vm_id].io_tune["vdc"] = ZERO | {"read_iops_sec": 7}
    assert world.tuning.stats_fields(vm)["ioTune"][1] == {
        "name": "vdc",
        "path": "/i/vdc.img",
        "ioTune": ZERO | {"read_iops_sec": 7},
    }


def test_a_recreated_vm_does_not_inherit_old_values(world: World) -> None:
    """What was read about a destroyed VM is not reported for a new VM with the same id."""
    vm_id = world.create()
    world.run(world.tuning.set_cpu_tune_quota(vm_id, 9000))
    world.run(world.vms.destroy(vm_id))
    world.run(world.vms.create(None, {"xml": domain_xml(vm_id)}))
    world.clock.advance(0)
    assert world.tuning.stats_fields(world.vms.get(vm_id))["vcpuQuota"] == -1


# -- KSM ----------------------------------------------------------------------------------------


def test_ksm_knobs_are_written(world: World) -> None:
    """setKsmTune writes each knob given to the KSM directory and leaves the others."""
    params = {"run": 1, "pages_to_scan": 1250, "merge_across_nodes": 0}
    assert world.run(world.tuning.set_ksm_tune(params)) is True
    written = {p.name: p.read_text() for p in world.ksm_dir.iterdir()}
    assert written == {
        "run": "1\n",
        "pages_to_scan": "1250\n",
        "merge_across_nodes": "0\n",
        "sleep_millisecs": "0\n",
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"run": 3}, "invalid value (3) for ksm tuning param run"),
        ({"merge_across_nodes": -1}, "merge_across_nodes"),
        ({"sleep_millisecs": 2**32}, "below 4294967296"),
        ({"pages_to_scan": "100"}, "must be an integer"),
        ({"run": 1, "full_scans": 0}, "invalid key in ksm tuning params: 'full_scans'"),
        ([1], "tuningParams must be an object"),
    ],
)
def test_bad_ksm_params_are_error_71_and_write_nothing(
    world: World, params: Any, message: str
) -> None:
    """An unknown knob or a value out of supervdsm's bounds is 71; no knob is written."""
    error = world.fails(world.tuning.set_ksm_tune(params), errors.KsmTuneError)
    assert error.code == 71 and message in str(error), str(error)
    assert {p.read_text() for p in world.ksm_dir.iterdir()} == {"0\n"}


def test_failed_ksm_write_is_error_71(world: World) -> None:
    """A knob missing from the KSM directory is 71 naming the file (no file is created)."""
    (world.ksm_dir / "sleep_millisecs").unlink()
    error = world.fails(world.tuning.set_ksm_tune({"sleep_millisecs": 20}), errors.KsmTuneError)
    assert "sleep_millisecs" in str(error) and "No such file" in str(error)
    assert not (world.ksm_dir / "sleep_millisecs").exists()


def test_without_ksm_the_verb_is_error_71(world: World) -> None:
    """An agent built without KSM access answers setKsmTune with 71."""
    tuning = VmTuning(world.vms, world.hv)
    assert world.fails(tuning.set_ksm_tune({"run": 1}), errors.KsmTuneError).code == 71
