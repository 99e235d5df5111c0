"""Plain data the hypervisor adapters hand to the core: domain events, domain, host and tuning
info."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DomainState(enum.Enum):
    """libvirt's domain states (``virDomainState``), by their libvirt numbers."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


class LifecycleEvent(enum.Enum):
    """libvirt's lifecycle event types (``virDomainEventType``), by their libvirt numbers."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5
    SHUTDOWN = 6
    PMSUSPENDED = 7
    CRASHED = 8


class StoppedDetail(enum.IntEnum):
    """Details of a STOPPED event (``virDomainEventStoppedDetailType``)."""

    SHUTDOWN = 0
    DESTROYED = 1
    CRASHED = 2
    MIGRATED = 3
    SAVED = 4
    FAILED = 5
    FROM_SNAPSHOT = 6


class SuspendedDetail(enum.IntEnum):
    """Details of a SUSPENDED event (``virDomainEventSuspendedDetailType``)."""

    PAUSED = 0
    MIGRATED = 1
    IOERROR = 2
    WATCHDOG = 3
    RESTORED = 4
    FROM_SNAPSHOT = 5
    API_ERROR = 6
    POSTCOPY = 7
    POSTCOPY_FAILED = 8


@dataclass(frozen=True)
class DomainEvent:
    """
    Something happened to a domain.

    :ivar vm_id: the domain UUID.
    :ivar kind: a :class:`LifecycleEvent`, or the string ``"reboot"`` for libvirt's reboot event.
    :ivar detail: libvirt's detail number for the event (0 when there is none).
    """

    vm_id: str
    kind: LifecycleEvent | str
    detail: int = 0


@dataclass(frozen=True)
class DomainInfo:
    """A domain as listed by the hypervisor."""

    vm_id: str
    name: str
    state: DomainState
    reason: int
    xml: str


@dataclass(frozen=True)
class HostInfo:
    """
    The host as the hypervisor sees it.

    :ivar memory_kib: total host memory in KiB.
    :ivar cpus: logical CPUs; ``sockets``, ``cores`` (per socket), ``threads`` (per core).
    :ivar cpu_model: the host CPU model name; ``cpu_mhz`` its speed.
    :ivar cpu_flags: CPU feature names.
    :ivar hostname: the hypervisor's hostname; ``host_uuid`` its UUID.
    :ivar emulated_machines: machine types the emulator offers (e.g. ``pc-i440fx-7.2``).
    :ivar kvm: whether hardware virtualization (KVM) is offered.
    :ivar lib_version: libvirt's version as ``(major, minor, micro)``; ``hv_version`` the
        hypervisor's (QEMU's), same shape; ``hv_type`` e.g. ``"QEMU"`` or ``"TEST"``.
    """

    memory_kib: int
    cpus: int
    sockets: int
    cores: int
    threads: int
    cpu_model: str
    cpu_mhz: int
    cpu_flags: tuple[str, ...]
    hostname: str
    host_uuid: str
    emulated_machines: tuple[str, ...]
    kvm: bool
    lib_version: tuple[int, int, int]
    hv_version: tuple[int, int, int]
    hv_type: str
    numa_nodes: dict[int, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class CpuTune:
    """
    A domain's vCPU bandwidth, as libvirt's ``schedulerParameters()`` reports it.

    :ivar quota: µs of CPU time each vCPU may use per ``period``; ``-1`` means unlimited.
    :ivar period: the enforcement period, µs (libvirt accepts 1000-1000000).
    :ivar vcpus: the domain's current vCPU count.
    """

    quota: int = -1
    period: int = 100_000
    vcpus: int = 1


#: The XML namespace of our ``<metadata>`` element in domain XML (``vdsmlike.vm.domxml`` reuses it).
METADATA_NS = "urn:vdsmlike:vm:1"
#: The prefix libvirt writes for :data:`METADATA_NS`.
METADATA_PREFIX = "vdsmlike"
