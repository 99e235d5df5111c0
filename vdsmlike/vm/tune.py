"""The tuning verbs MOM drives through the agent, as VDSM has them: vCPU bandwidth, block IO limits
and their policy, and KSM.

- ``VM.setCpuTuneQuota`` / ``VM.setCpuTunePeriod``: libvirt's ``vcpu_quota`` / ``vcpu_period``,
  live. libvirt may adjust what it is given (a negative quota reads back as -1), so the values
  reported afterwards are read back from the hypervisor, as VDSM does.
- ``VM.setIoTune``: per disk, found by ``name`` (target dev) or ``path``, the given limits are
  merged over the disk's current ones, checked (the six keys, whole numbers >= 0, no non-zero
  total with a non-zero read or write of the same unit) and applied live. ``VM.getIoTune`` reads
  every disk's limits from the hypervisor.
- ``VM.getIoTunePolicy`` and ``Host.getAllVmIoTunePolicies``: the policy is what the engine put
  in the domain XML, where VDSM keeps it: ``<metadata><ovirt-tune:qos>`` in namespace
  :data:`TUNE_NS`, with ``<vcpuLimit>`` (percent, VM stats' ``vcpuUserLimit``, default 100) and
  ``<ioTune><device name= path=><maximum>...</maximum><guaranteed>...</guaranteed></device>``.
  The agent only reads it: nothing here writes metadata (VDSM's ``VM.updateVmPolicy``, which
  changes it at run time, is not implemented).
- ``Host.setKsmTune``: :class:`~vdsmlike.host.ksm.KsmSysfs`.

VM stats (:meth:`VmTuning.stats_fields`) carry what was last read: values are read when a verb
runs and, the first time stats are asked for a running VM, in the background (the stats call
itself never waits for libvirt), as VDSM caches them rather than asking libvirt on every poll.

Errors carry VDSM's codes: unknown VM 1, Down 6, not running 16, external VM 75, and the
verb's own: 62 (CPU tune), 64 (ioTune) and 71 (KSM), with libvirt's message when it refused.
Changes to one VM are serialized, so two ``setIoTune`` calls cannot merge over each other.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from defusedxml import ElementTree
from twisted.internet.defer import Deferred, DeferredLock, gatherResults
from twisted.logger import Logger

from ..api import errors
from ..host.ksm import InvalidKsmParams, KsmSysfs
from ..interfaces import IHypervisor
from ..virt.errors import DomainNotFound, HypervisorError
from ..virt.events import CpuTune
from ..virt.runner import RunnerStopped
from ..virt.tuning import IO_TUNE_KEYS
from .container import VmContainer
from .domxml import DiskSpec
from .states import VmState
from .vm import Vm

#: VDSM's namespace of the tuning policy in ``<metadata>`` (element ``qos``).
TUNE_NS = "http://ovirt.org/vm/tune/1.0"
#: ``vcpuUserLimit`` when the policy sets none: the VM may use 100 % of what it has.
DEFAULT_VCPU_LIMIT = 100

#: States whose domain runs in libvirt and can be tuned.
TUNABLE_STATES = (
    VmState.POWERING_UP,
    VmState.UP,
    VmState.POWERING_DOWN,
    VmState.REBOOT_IN_PROGRESS,
    VmState.PAUSED,
)


# -- the policy in the domain XML (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class DiskLimits:
    """One ``<device>`` of the ioTune policy: its limits as ``((key, value), ...)``."""

    name: str | None
    path: str | None
    maximum: tuple[tuple[str, int], ...] | None
    guaranteed: tuple[tuple[str, int], ...] | None

    def wire(self) -> dict[str, Any]:
        """VDSM's ``VmDiskDeviceTuneLimits``: only the parts the policy has."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.path:
            out["path"] = self.path
        if self.maximum is not None:
            out["maximum"] = dict(self.maximum)
        if self.guaranteed is not None:
            out["guaranteed"] = dict(self.guaranteed)
        return out


@dataclass(frozen=True)
class QosPolicy:
    """A VM's tuning policy: its vCPU limit (percent) and per-disk IO limits."""

    vcpu_limit: int = DEFAULT_VCPU_LIMIT
    io_tune: tuple[DiskLimits, ...] = ()


@lru_cache(maxsize=16384)
def qos_policy(xml: str) -> QosPolicy:
    """
    Read VDSM's ``<ovirt-tune:qos>`` from domain XML (pure; remembered per XML text, since stats
    ask for it on every poll). Children are matched by local name, prefixed or not; values that
    are not whole numbers are left out.

    :returns: the policy, or the default one when the XML has none or cannot be read.
    """
    if TUNE_NS not in xml:
        return QosPolicy()
    try:
        root = ElementTree.fromstring(xml)
    except Exception:  # defusedxml raises several types; the container parsed this XML before
        return QosPolicy()
    qos = root.find(f"metadata/{{{TUNE_NS}}}qos")
    if qos is None:
        return QosPolicy()
    limit = _whole_number(_child_text(qos, "vcpuLimit"))
    io_tune = _child(qos, "ioTune")
    devices = _children(io_tune, "device") if io_tune is not None else iter(())
    return QosPolicy(
        DEFAULT_VCPU_LIMIT if limit is None else limit, tuple(map(_disk_limits, devices))
    )


def _disk_limits(device: Any) -> DiskLimits:
    def values(tag: str) -> tuple[tuple[str, int], ...] | None:
        element = _child(device, tag)
        if element is None:
            return None
        read = ((_local(e.tag), _whole_number(e.text)) for e in element)
        return tuple((k, v) for k, v in read if k in IO_TUNE_KEYS and v is not None)

    return DiskLimits(
        device.get("name"), device.get("path"), values("maximum"), values("guaranteed")
    )


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _children(element: Any, name: str) -> Iterator[Any]:
    return (child for child in element if _local(child.tag) == name)


def _child(element: Any, name: str) -> Any:
    return next(_children(element, name), None)


def _child_text(element: Any, name: str) -> str | None:
    child = _child(element, name)
    return child.text if child is not None else None


def _whole_number(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


# -- checking requests (pure) ----------------------------------------------------------------------


def integer(value: Any, name: str, error: type[errors.RpcError]) -> int:
    """
    ``value`` as an int, as VDSM's ``int(value)`` takes it (an int or a numeric string).

    :raises error: for anything else, booleans included.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise error(f"an integer is required for {name}, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise error(f"an integer is required for {name}, got {value!r}") from None


def io_tune_values(values: Any) -> dict[str, int]:
    """
    Check the ``ioTune`` of one tunable as VDSM does: known keys, whole numbers >= 0.

    :raises errors.IoTuneError: naming the key.
    """
    if not isinstance(values, Mapping):
        raise errors.IoTuneError(f"Invalid ioTune value: ioTune must be an object, got {values!r}")
    checked = {}
    for key, value in values.items():
        if key not in IO_TUNE_KEYS:
            raise errors.IoTuneError(
                f"Invalid ioTune value: parameter {key} name is invalid "
                f"(known: {', '.join(IO_TUNE_KEYS)})"
            )
        number = integer(value, f"ioTune parameter {key}", errors.IoTuneError)
        if number < 0:
            raise errors.IoTuneError(
                f"Invalid ioTune value: parameter {key} value should be equal or greater than zero"
            )
        checked[key] = number
    return checked


def check_io_tune_categories(limits: Mapping[str, int]) -> None:
    """:raises errors.IoTuneError: for a non-zero total with a non-zero read or write limit."""
    for unit in ("bytes_sec", "iops_sec"):
        if limits.get(f"total_{unit}") and (
            limits.get(f"read_{unit}") or limits.get(f"write_{unit}")
        ):
            raise errors.IoTuneError(
                f"Invalid ioTune value: a non-zero total value and non-zero read/write value for "
                f"{unit} can not be set at the same time"
            )


def tunable_disks(vm: Vm) -> list[DiskSpec]:
    """The VM's disks that take IO limits: ``device='disk'`` (not CD-ROMs, floppies or LUNs)."""
    return [disk for disk in vm.spec.disks if disk.device == "disk"]


def find_disk(vm: Vm, name: Any, path: Any) -> DiskSpec | None:
    """The tunable disk whose target dev is ``name``, else whose source is ``path``."""
    disks = tunable_disks(vm)
    by_name = [d for d in disks if name is not None and d.target_dev == name]
    by_path = [d for d in disks if path is not None and d.source_path == path]
    return next(iter(by_name + by_path), None)


def current_values(disk: DiskSpec, limits: Mapping[str, int]) -> dict[str, Any]:
    """VDSM's ``VmDiskDeviceTuneParams`` of one disk: ``{name, path, ioTune}``."""
    return {"name": disk.target_dev, "path": disk.source_path or "", "ioTune": dict(limits)}


# -- the verbs ---------------------------------------------------------------------------------


@dataclass
class _Known:
    """What was last read from the hypervisor about one VM (``vm`` tells VM objects apart)."""

    vm: Vm
    cpu: CpuTune | None = None
    io: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: bool = False


@contextmanager
def _refusals(vm: Vm, error: type[errors.RpcError]) -> Iterator[None]:
    """Turn hypervisor errors into VDSM's: a vanished domain is 1, a refusal ``error``."""
    try:
        yield
    except DomainNotFound:
        raise errors.NoSuchVM("the domain is gone", vmId=vm.vm_id) from None
    except HypervisorError as e:
        raise error(str(e), vmId=vm.vm_id) from None


class VmTuning:
    """
    The tuning verbs, over the VM container and the hypervisor.

    :param container: the VMs of this host (read only: no VM state changes here).
    :param hypervisor: applies and reads the tuning.
    :param ksm: writes KSM's knobs; None answers ``Host.setKsmTune`` with error 71.
    """

    log = Logger()

    def __init__(
        self, container: VmContainer, hypervisor: IHypervisor, *, ksm: KsmSysfs | None = None
    ) -> None:
        self._vms = container
        self._hv = hypervisor
        self._ksm = ksm
        self._known: dict[str, _Known] = {}
        self._locks: dict[str, DeferredLock] = {}
        self._refreshing: set[str] = set()

    # -- VM.setCpuTuneQuota, VM.setCpuTunePeriod

    async def set_cpu_tune_quota(self, vm_id: str, quota: Any) -> bool:
        """
        Set the vCPU quota (µs per period; negative: unlimited).

        :raises errors.CpuTuneError: (62) for a non-integer or a value libvirt refuses.
        """
        vm = self._tunable(vm_id, change=True)
        value = integer(quota, "quota", errors.CpuTuneError)
        await self._serialized(vm, self._set_cpu_tune, vm, quota=value)
        return True

    async def set_cpu_tune_period(self, vm_id: str, period: Any) -> bool:
        """
        Set the vCPU period (µs, 1000-1000000).

        :raises errors.CpuTuneError: (62) for a non-integer or a value libvirt refuses.
        """
        vm = self._tunable(vm_id, change=True)
        value = integer(period, "period", errors.CpuTuneError)
        await self._serialized(vm, self._set_cpu_tune, vm, period=value)
        return True

    async def _set_cpu_tune(self, vm: Vm, **change: int) -> None:
        with _refusals(vm, errors.CpuTuneError):
            await self._hv.set_cpu_tune(vm.vm_id, **change)
            cpu = await self._hv.get_cpu_tune(vm.vm_id)
        known = self._known_for(vm)
        known.cpu, known.unreadable = cpu, False

    # -- VM.setIoTune, VM.getIoTune

    async def set_io_tune(self, vm_id: str, tunables: list[Any]) -> bool:
        """
        Merge each tunable's ``ioTune`` over its disk's current limits and apply them, in order.
        Every tunable is checked before the first is applied.

        :raises errors.IoTuneError: (64) for an unknown disk, a bad key or value, a total with a
            read or write limit, or a refusal by libvirt.
        """
        vm = self._tunable(vm_id, change=True)
        if not isinstance(tunables, list):
            raise errors.IoTuneError(f"tunables must be a list, got {tunables!r}")
        changes = [self._io_change(vm, tunable) for tunable in tunables]
        await self._serialized(vm, self._apply_io_tune, vm, changes)
        return True

    def _io_change(self, vm: Vm, tunable: Any) -> tuple[DiskSpec, dict[str, int]]:
        if not isinstance(tunable, Mapping):
            raise errors.IoTuneError(f"a tunable must be an object, got {tunable!r}")
        name, path = tunable.get("name"), tunable.get("path")
        disk = find_disk(vm, name, path)
        if disk is None:
            raise errors.IoTuneError(f"Device {name if name is not None else path} not found")
        return disk, io_tune_values(tunable.get("ioTune"))

    async def _apply_io_tune(self, vm: Vm, changes: list[tuple[DiskSpec, dict[str, int]]]) -> None:
        known = self._known_for(vm)
        for disk, change in changes:
            with _refusals(vm, errors.IoTuneError):
                limits = {**await self._hv.get_block_io_tune(vm.vm_id, disk.target_dev), **change}
                check_io_tune_categories(limits)
                await self._hv.set_block_io_tune(vm.vm_id, disk.target_dev, limits)
            known.io[disk.target_dev] = limits
        known.unreadable = False

    async def get_io_tune(self, vm_id: str) -> list[dict[str, Any]]:
        """
        Read every disk's limits from the hypervisor.

        :returns: ``[{name, path, ioTune: {the six keys}}]``, one per disk.
        :raises errors.IoTuneError: (64) when libvirt cannot read a disk's limits.
        """
        vm = self._tunable(vm_id)
        known = self._known_for(vm)
        result = []
        for disk in tunable_disks(vm):
            with _refusals(vm, errors.IoTuneError):
                limits = await self._hv.get_block_io_tune(vm.vm_id, disk.target_dev)
            known.io[disk.target_dev] = limits
            result.append(current_values(disk, limits))
        return result

    # -- VM.getIoTunePolicy, Host.getAllVmIoTunePolicies

    def get_io_tune_policy(self, vm_id: str) -> list[dict[str, Any]]:
        """:returns: the VM's ioTune policy, ``[{name, path, maximum, guaranteed}]`` (any state)."""
        return [limits.wire() for limits in qos_policy(self._vms.get(vm_id).xml).io_tune]

    async def all_io_tune_policies(self) -> dict[str, dict[str, Any]]:
        """
        The policy and current limits of every VM, as MOM reads them.

        :returns: ``{vmId: {policy, current_values}}``; ``{}`` for a VM that is not running or
            whose limits cannot be read.
        """
        vms = self._vms.vms()
        values = await gatherResults(
            [Deferred.fromCoroutine(self._policy_values(vm)) for vm in vms], consumeErrors=True
        )
        return {vm.vm_id: value for vm, value in zip(vms, values, strict=True)}

    async def _policy_values(self, vm: Vm) -> dict[str, Any]:
        if vm.state not in TUNABLE_STATES:
            return {}
        known = self._known_for(vm)
        current = []
        try:
            for disk in tunable_disks(vm):
                limits = known.io.get(disk.target_dev)
                if limits is None:
                    limits = await self._hv.get_block_io_tune(vm.vm_id, disk.target_dev)
                    known.io[disk.target_dev] = limits
                current.append(current_values(disk, limits))
        except HypervisorError as e:
            self.log.warn("vm {vm_id}: cannot read ioTune: {error}", vm_id=vm.vm_id, error=e)
            return {}
        return {"policy": self.get_io_tune_policy(vm.vm_id), "current_values": current}

    # -- Host.setKsmTune

    async def set_ksm_tune(self, params: Any) -> bool:
        """
        Write KSM's knobs (``run``, ``merge_across_nodes``, ``pages_to_scan``,
        ``sleep_millisecs``).

        :raises errors.KsmTuneError: (71) for an unknown knob, a value out of range (nothing is
            written then), or a failed write.
        """
        if self._ksm is None:
            raise errors.KsmTuneError("KSM tuning is not available on this agent")
        if not isinstance(params, Mapping):
            raise errors.KsmTuneError(f"tuningParams must be an object, got {params!r}")
        try:
            await self._ksm.tune(params)
        except InvalidKsmParams as e:
            raise errors.KsmTuneError(str(e)) from None
        except OSError as e:
            raise errors.KsmTuneError(f"cannot write {e.filename}: {e.strerror}") from None
        return True

    # -- VM stats

    def stats_fields(self, vm: Vm) -> dict[str, Any]:
        """
        The tuning fields of a VM's ``VmStats``, from what is known; never waits for libvirt.

        A call for a running VM whose CPU tuning or some disk's limits were never read starts
        reading them in the background (a hot-plugged disk, too); until that is done,
        ``vcpuQuota`` and ``vcpuPeriod`` are left out (the stats then show libvirt's defaults)
        and ``ioTune`` lists only the disks read so far. When a read fails, the VM is not asked
        again until one of its tuning verbs succeeds.

        :returns: ``vcpuUserLimit`` (int, from the policy), and for a running VM ``ioTune``
            (``[{name, path, ioTune}]``) and, once read, ``vcpuQuota`` and ``vcpuPeriod``.
        """
        fields: dict[str, Any] = {"vcpuUserLimit": qos_policy(vm.xml).vcpu_limit}
        if vm.state not in TUNABLE_STATES:
            return fields
        known = self._known_for(vm)
        disks = tunable_disks(vm)
        missing = known.cpu is None or any(d.target_dev not in known.io for d in disks)
        if missing and not known.unreadable:
            self._refresh_soon(vm)
        if known.cpu is not None:
            fields["vcpuQuota"], fields["vcpuPeriod"] = known.cpu.quota, known.cpu.period
        fields["ioTune"] = [
            current_values(disk, known.io[disk.target_dev])
            for disk in disks
            if disk.target_dev in known.io
        ]
        return fields

    def _refresh_soon(self, vm: Vm) -> None:
        if vm.vm_id in self._refreshing:
            return
        self._refreshing.add(vm.vm_id)
        d = Deferred.fromCoroutine(self._refresh(vm))
        d.addErrback(lambda f: self.log.failure("vm {vm_id}: reading tuning", f, vm_id=vm.vm_id))
        d.addBoth(lambda _: self._refreshing.discard(vm.vm_id))

    async def _refresh(self, vm: Vm) -> None:
        known = self._known_for(vm)
        try:
            cpu = known.cpu or await self._hv.get_cpu_tune(vm.vm_id)
            for disk in tunable_disks(vm):
                if disk.target_dev not in known.io:
                    known.io[disk.target_dev] = await self._hv.get_block_io_tune(
                        vm.vm_id, disk.target_dev
                    )
        except HypervisorError as e:
            # Not retried on every poll: a host without a CPU cgroup never reports a quota.
            known.unreadable = True
            self.log.info("vm {vm_id}: tuning not readable: {error}", vm_id=vm.vm_id, error=e)
            return
        except RunnerStopped:
            return  # the agent is stopping; the next start reads it again
        known.cpu = cpu

    # -- internals

    def _tunable(self, vm_id: str, *, change: bool = False) -> Vm:
        vm = self._vms.get(vm_id)
        if change and vm.external:
            raise errors.UnsupportedOperation(
                "the VM is external (not created by this agent)", vmId=vm.vm_id
            )
        if vm.is_down:
            raise errors.VMIsDown(vmId=vm.vm_id)
        if vm.state not in TUNABLE_STATES:
            raise errors.UnexpectedError(
                f"operation not possible in status {vm.state.value}", vmId=vm.vm_id
            )
        return vm

    def _known_for(self, vm: Vm) -> _Known:
        known = self._known.get(vm.vm_id)
        if known is None or known.vm is not vm:
            known = self._known[vm.vm_id] = _Known(vm)
            if len(self._known) > 2 * len(self._vms.vms()) + 16:
                self._forget_gone()
        return known

    def _forget_gone(self) -> None:
        current = {vm.vm_id: vm for vm in self._vms.vms()}
        for vm_id, known in list(self._known.items()):
            if current.get(vm_id) is not known.vm:
                del self._known[vm_id]

    async def _serialized(
        self, vm: Vm, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """Run ``fn`` after every earlier change to the same VM has finished."""
        lock = self._locks.setdefault(vm.vm_id, DeferredLock())
        try:
            return await lock.run(lambda: Deferred.fromCoroutine(fn(*args, **kwargs)))
        finally:
            if not lock.locked and not lock.waiting and self._locks.get(vm.vm_id) is lock:
                del self._locks[vm.vm_id]
