"""Pure: the cluster manager's state and its settings.

:class:`ClusterState` is everything :class:`~engine.decide.cluster.ClusterManager` knows: a
record per host (its status as :mod:`engine.decide.hoststate` says, its fencing progress, its
maintenance request) and per VM (status, host, the operation in flight, its HA restart
progress), the scheduler's pending ledger, and the outbox of commands decided but not yet
returned. The deciding modules (:mod:`~engine.decide.fencing`, :mod:`~engine.decide.harestart`,
:mod:`~engine.decide.evacuation`) read and update it; nothing here does I/O or reads a clock.

What the engine's store keeps of it, and how the manager is rebuilt from that, is
:mod:`engine.decide.clustersnapshot`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.store.rows import VmStatus

from . import hoststate
from .commands import Command, Event, event
from .hoststate import HostState, HostTiming
from .model import HostView, VmRequest
from .moves import MoveHistory
from .plugins import PolicyUnits
from .policies import Policy
from .powersave import PowerHistory
from .scheduler import PendingResources
from .utilization import CpuBand, cpu_band_since, cpu_over_commit_seconds

#: The liveness budget HA is tuned for (see :mod:`engine.decide.cluster` for the whole budget):
#: a ping every 2 s answered within 1 s, Connecting after 2 misses, NonResponsive 5 s after the
#: first miss.
HA_TIMING = HostTiming(
    heartbeat_interval=2.0, heartbeat_timeout=1.0, misses_to_suspect=2, grace_period=5.0
)


class ExitReason(enum.StrEnum):
    """Why a VM is Down, as far as HA cares (the shell maps VDSM's exit reasons to these)."""

    USER = "user"
    ADMIN = "admin"
    CRASHED = "crashed"
    HOST_FENCED = "host_fenced"
    LOST = "lost"
    START_FAILED = "start_failed"
    MIGRATED = "migrated"

    @property
    def words(self) -> str:
        """:returns: the reason in words, for messages."""
        return _WORDS[self]

    @property
    def restartable(self) -> bool:
        """Whether an HA VM that went Down for this reason is restarted (errors only)."""
        return self in _RESTARTABLE


_WORDS = {
    ExitReason.USER: "shut down from inside the guest",
    ExitReason.ADMIN: "stopped by the user",
    ExitReason.CRASHED: "crashed",
    ExitReason.HOST_FENCED: "its host was fenced",
    ExitReason.LOST: "lost by its host",
    ExitReason.START_FAILED: "failed to start",
    ExitReason.MIGRATED: "migrated away",
}

_RESTARTABLE = frozenset(
    {ExitReason.CRASHED, ExitReason.HOST_FENCED, ExitReason.LOST, ExitReason.START_FAILED}
)

#: VM statuses that hold resources on their host (everything but Down).
RUNNING = frozenset(set(VmStatus) - {VmStatus.DOWN})


class DeadlineAction(enum.StrEnum):
    """What a host whose maintenance deadline passed does."""

    ACTIVATE = "activate"
    STAY = "stay"


@dataclass(frozen=True, slots=True)
class HaSettings:
    """
    The cluster manager's knobs; every time is in seconds.

    :ivar timing: the host liveness budget (the host links must use the same heartbeat).
    :ivar fencing_enabled: fence NonResponsive hosts that hold VMs at all.
    :ivar storm_guard: skip fencing while many hosts are unreachable (on by default, unlike
        oVirt).
    :ivar storm_threshold_percent: the share of hosts, Connecting or NonResponsive, from which
        fencing stops.
    :ivar startup_fence_delay: no fencing this long after the manager was rebuilt from the
        store (its links are still connecting; oVirt waits 300 s).
    :ivar soft_fence_timeout: a soft fence with no outcome this long has failed.
    :ivar soft_fence_return_wait: after the agent was restarted, how long the host has to
        answer before power fencing follows.
    :ivar power_timeout: a power status query or power fence with no outcome this long has an
        unknown result.
    :ivar fence_quiet_time: after a fencing round failed, wait this long before the next one.
    :ivar power_on_after_fence: switch a power-fenced host on again once confirmed off.
    :ivar restart_short_interval: the delay between HA restart attempts, at first.
    :ivar restart_short_tries: attempts at the short interval before the long one.
    :ivar restart_long_interval: the delay between HA restart attempts afterwards (forever).
    :ivar max_blocked_on_priority: how long an HA VM waits for VMs of higher priority to be Up
        before it starts anyway.
    :ivar max_reruns: failed starts rerun at once on another host before backing off.
    :ivar start_timeout: a start with no outcome this long has failed.
    :ivar migration_timeout: a migration with no outcome this long has failed.
    :ivar max_starts_per_host: starts in flight per destination host.
    :ivar max_migrations_in: migrations in flight per destination host.
    :ivar max_migrations_out: migrations in flight per source host.
    :ivar maintenance_deadline: time a host has to empty itself after maintenance is asked.
    :ivar on_maintenance_deadline: ``"activate"`` (default): report what could not move and
        take the host back Up, so the cluster does not silently lose a host that takes no VMs;
        ``"stay"``: report, stay PreparingForMaintenance and keep trying (oVirt's way).
    :ivar evacuation_retry: delay before trying again to move a VM that could not move.
    """

    timing: HostTiming = HA_TIMING
    fencing_enabled: bool = True
    storm_guard: bool = True
    storm_threshold_percent: int = 50
    startup_fence_delay: float = 5.0
    soft_fence_timeout: float = 10.0
    soft_fence_return_wait: float = 6.0
    power_timeout: float = 30.0
    fence_quiet_time: float = 60.0
    power_on_after_fence: bool = True
    restart_short_interval: float = 5.0
    restart_short_tries: int = 10
    restart_long_interval: float = 60.0
    max_blocked_on_priority: float = 30.0
    max_reruns: int = 3
    start_timeout: float = 60.0
    migration_timeout: float = 300.0
    max_starts_per_host: int = 4
    max_migrations_in: int = 2
    max_migrations_out: int = 2
    maintenance_deadline: float = 600.0
    on_maintenance_deadline: DeadlineAction = DeadlineAction.ACTIVATE
    evacuation_retry: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a non-negative number, got {value!r}")
        if not 1 <= self.storm_threshold_percent <= 100:
            raise ValueError("storm_threshold_percent must be within 1..100")
        for name in ("max_starts_per_host", "max_migrations_in", "max_migrations_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        DeadlineAction(self.on_maintenance_deadline)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> HaSettings:
        """
        Settings from a configuration mapping: this class's field names and
        :class:`~engine.decide.hoststate.HostTiming`'s (``grace_period``, ...).

        :raises ValueError: for an unknown name or a value of the wrong type or range.
        """
        base = cls()
        own = {f.name for f in fields(cls) if f.name != "timing"}
        timing_names = {f.name for f in fields(HostTiming)}
        changes: dict[str, Any] = {}
        timing: dict[str, Any] = {}
        for name, value in values.items():
            if name in timing_names:
                timing[name] = _number(name, value, int if name == "misses_to_suspect" else float)
            elif name in own:
                changes[name] = _coerce(name, getattr(base, name), value)
            else:
                known = ", ".join(sorted([*own, *timing_names]))
                raise ValueError(f"unknown setting {name!r} (known: {known})")
        if timing:
            changes["timing"] = replace(base.timing, **timing)
        return replace(base, **changes)


def _number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"setting {name!r} must be a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise ValueError(f"setting {name!r} must be a whole number, got {value!r}")
    return kind(value)


def _coerce(name: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"setting {name!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, enum.Enum):
        try:
            return type(default)(value)
        except ValueError:
            options = ", ".join(m.value for m in type(default))
            raise ValueError(f"setting {name!r} must be one of {options}, got {value!r}") from None
    return _number(name, value, type(default))


# -- progress records ------------------------------------------------------------------------


class FenceStage(enum.StrEnum):
    """Where a host's fencing stands."""

    NONE = "none"
    SOFT = "soft-fencing"
    POWER = "power-fencing"
    FENCED = "fenced"
    FAILED = "failed"


@dataclass(slots=True)
class FenceProgress:
    """
    One host's fencing ladder.

    :ivar stage: the current step.
    :ivar deadline: when the step in flight times out (None when nothing is in flight).
    :ivar power: the last answer of its power management to a status query, or None.
    :ivar power_deadline: a status query is in flight until then.
    :ivar agent_restarted_at: when a soft fence restarted its agent (waiting for an answer).
    :ivar quiet_until: no new round before this time (after a failed round).
    :ivar rounds: failed rounds so far.
    :ivar alerted: the alert of the current failure was given (one alert per round).
    """

    stage: FenceStage = FenceStage.NONE
    deadline: float | None = None
    power: str | None = None
    power_deadline: float | None = None
    agent_restarted_at: float | None = None
    quiet_until: float | None = None
    rounds: int = 0
    alerted: bool = False


@dataclass(slots=True)
class Operation:
    """
    An operation in flight: ``kind`` ``"start"`` or ``"migrate"`` (to ``host``), or ``"stop"``
    (on ``host``; it has no deadline: the host's report ends it).
    """

    kind: str
    host: str
    started: float
    deadline: float


@dataclass(slots=True)
class RestartProgress:
    """
    An HA VM waiting to be restarted.

    :ivar queued_at: when it joined the queue (bounds its wait for higher priorities).
    :ivar reason: why it is restarted.
    :ivar attempts: failed attempts so far.
    :ivar next_try: not before this time.
    :ivar avoid: hosts where a start failed (reruns go elsewhere).
    :ivar blocked_noted: the "blocked on priority" event was given.
    :ivar waiting_noted: the "waiting for a start slot" event was given.
    """

    queued_at: float
    reason: str
    attempts: int = 0
    next_try: float = 0.0
    avoid: frozenset[str] = frozenset()
    blocked_noted: bool = False
    waiting_noted: bool = False


@dataclass(slots=True)
class MaintenanceRequest:
    """
    An admin's maintenance request for one host.

    :ivar deadline: when the host must be empty.
    :ivar move_back: migrate the evacuated VMs back when the host is activated.
    :ivar moved: VMs that left the host for this maintenance (for move-back), by VM id.
    :ivar reported: the deadline report was given.
    """

    requested_at: float
    deadline: float
    move_back: bool = False
    moved: list[str] = field(default_factory=list)
    reported: bool = False


@dataclass(slots=True)
class HostRecord:
    """
    One host as the manager tracks it.

    :ivar status: its status per :mod:`engine.decide.hoststate`.
    :ivar power_management: it has a power-management device (power fencing is possible).
    :ivar fencing_enabled: the engine may fence it by itself (its power management settings
        say so; the cluster-wide ``HaSettings.fencing_enabled`` must allow it too).
    :ivar band: its CPU band and since when (for the scheduler's ``cpu_overloaded``).
    :ivar power_saving: where power saving has it: ``"switching_off"`` (maintenance asked, to
        be powered off once empty), ``"off"`` (powered off), ``"waking"`` (powered on, to be
        activated once its agent connects), or None (power saving leaves it alone).
    """

    id: str
    name: str
    cpus: int
    memory_mib: int
    status: hoststate.HostStatus
    reserved_mib: int = 0
    power_management: bool = False
    fencing_enabled: bool = True
    cpu_load: float = 0.0
    band: tuple[CpuBand, float] | None = None
    fence: FenceProgress = field(default_factory=FenceProgress)
    maintenance: MaintenanceRequest | None = None
    power_saving: str | None = None

    @property
    def state(self) -> HostState:
        """:returns: the host's state."""
        return self.status.state


@dataclass(slots=True)
class VmRecord:
    """
    One VM as the manager tracks it.

    :ivar status: the engine's status for it.
    :ivar host: where it runs (or last ran, while Unknown); None when Down.
    :ivar target: the destination of its migration in flight.
    :ivar exit: why it is Down.
    :ivar op: the start or migration in flight.
    :ivar restart: its HA restart progress, while it waits to be restarted.
    :ivar lost_at: when the trouble that took it down began (the HA latency's start).
    :ivar evac_next: maintenance: do not try to move it before this time.
    :ivar evac_reason: maintenance: why it could not move, last time.
    :ivar cpu_percent: its CPU usage in percent of its own vCPUs (the balancer's prediction).
    """

    id: str
    name: str
    memory_mib: int
    vcpus: int = 1
    ha: bool = False
    priority: int = 0
    pinned_host: str | None = None
    status: VmStatus = VmStatus.DOWN
    host: str | None = None
    target: str | None = None
    exit: ExitReason | None = None
    op: Operation | None = None
    restart: RestartProgress | None = None
    lost_at: float | None = None
    evac_next: float = 0.0
    evac_reason: str | None = None
    cpu_percent: float = 0.0

    def request(self, *, current_host: str | None = None, avoid: Iterable[str] = ()) -> VmRequest:
        """:returns: this VM as the scheduler's request."""
        return VmRequest(
            id=self.id,
            name=self.name,
            memory_mib=self.memory_mib,
            vcpus=self.vcpus,
            pinned_host=self.pinned_host,
            ha_priority=self.priority,
            current_host=current_host,
            avoid_hosts=frozenset(avoid),
        )


# -- the state ---------------------------------------------------------------------------------

#: Adds what extra scheduler units need to a request: ``(request, placement, leaving)`` where
#: ``placement`` maps running VM ids to host ids and ``leaving`` holds the hosts being evacuated
#: (e.g. ``lambda r, p, l: affinity.with_affinity(r, groups, p, names, leaving=l)``).
RequestDecorator = Callable[[VmRequest, Mapping[str, str], frozenset[str]], VmRequest]


@dataclass
class ClusterState:
    """
    Everything the manager knows, shared by its deciding modules.

    :ivar fence_from: no fencing before this time (the startup delay).
    :ivar storm: the fencing storm guard is holding fencing back.
    :ivar move_back: ``(vm, host)`` pairs to migrate back after a maintenance.
    :ivar outbox: commands decided since the last ``tick`` returned.
    :ivar decorate: adds what the scheduler's extra units need to a request (affinity: its
        groups and where their members run), or None.
    :ivar moves: the balancer's moves (cooldown and no move back), kept across ticks and in the
        snapshot.
    :ivar power: power saving's host power actions and shortages (its hysteresis), likewise.
    """

    settings: HaSettings
    policy: Policy
    units: PolicyUnits | None = None
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    vms: dict[str, VmRecord] = field(default_factory=dict)
    pending: PendingResources = field(default_factory=PendingResources)
    fence_from: float = 0.0
    storm: bool = False
    delay_noted: bool = False
    move_back: list[tuple[str, str]] = field(default_factory=list)
    outbox: list[Command] = field(default_factory=list)
    decorate: RequestDecorator | None = None
    moves: MoveHistory = field(default_factory=MoveHistory)
    power: PowerHistory = field(default_factory=PowerHistory)
    calm_since: float | None = None

    def emit(self, *commands: Command) -> None:
        """Queue ``commands`` for the next ``tick``."""
        self.outbox.extend(commands)

    def note(
        self, kind: Any, *, host: str | None = None, vm: str | None = None, **details: Any
    ) -> Event:
        """Queue and return an event of ``kind`` about ``host`` and ``vm`` (ids), with names."""
        names = (self.host_name(host), self.vm_name(vm))
        built = event(kind, host=host, vm=vm, names=names, **details)
        self.outbox.append(built)
        return built

    def host_name(self, host: str | None) -> str | None:
        """:returns: the host's name (its id when unknown), or None."""
        if host is None:
            return None
        record = self.hosts.get(host)
        return record.name if record is not None else host

    def vm_name(self, vm: str | None) -> str | None:
        """:returns: the VM's name (its id when unknown), or None."""
        if vm is None:
            return None
        record = self.vms.get(vm)
        return record.name if record is not None else vm

    def sorted_hosts(self) -> list[HostRecord]:
        """:returns: the hosts by name."""
        return sorted(self.hosts.values(), key=lambda h: (h.name, h.id))

    def sorted_vms(self) -> list[VmRecord]:
        """:returns: the VMs by name."""
        return sorted(self.vms.values(), key=lambda v: (v.name, v.id))

    def vms_on(self, host: str) -> list[VmRecord]:
        """:returns: the VMs that are not Down and run (or last ran) on ``host``, by name."""
        return [v for v in self.sorted_vms() if v.host == host and v.status in RUNNING]

    def in_flight(self, host: str, kind: str, *, outgoing: bool = False) -> int:
        """:returns: operations of ``kind`` in flight to ``host`` (or from it, ``outgoing``)."""
        ops = [(v.host, v.op) for v in self.vms.values() if v.op is not None and v.op.kind == kind]
        return sum(1 for src, op in ops if (src if outgoing else op.host) == host)

    def request(
        self, vm: VmRecord, *, current_host: str | None = None, avoid: Iterable[str] = ()
    ) -> VmRequest:
        """:returns: ``vm`` as the scheduler's request, decorated (affinity) when configured."""
        request = vm.request(current_host=current_host, avoid=avoid)
        if self.decorate is None:
            return request
        placement = {
            v.id: v.host
            for v in self.vms.values()
            if v.host is not None and v.status in RUNNING and v.status is not VmStatus.UNKNOWN
        }
        leaving = frozenset(
            h.id for h in self.hosts.values() if h.state is HostState.PREPARING_FOR_MAINTENANCE
        )
        return self.decorate(request, placement, leaving)

    def _loads(self, host_id: str | None = None) -> dict[str, list[int]]:
        """:returns: host id → [committed MiB, vCPUs, VMs] of the VMs on it (one pass over the
        VMs: a decision over many hosts must not walk every VM once per host)."""
        loads: dict[str, list[int]] = {}
        for vm in self.vms.values():
            if vm.host is None or vm.status not in RUNNING:
                continue
            if host_id is not None and vm.host != host_id:
                continue
            load = loads.setdefault(vm.host, [0, 0, 0])
            load[1] += vm.vcpus
            load[2] += 1
            held = self.pending.reservation(vm.id)
            if held is None or held.host_id != vm.host:
                load[0] += vm.memory_mib
        return loads

    def host_view(
        self, host: HostRecord, now: float, loads: dict[str, list[int]] | None = None
    ) -> HostView:
        """:returns: ``host`` as the scheduler sees it; the ledger adds what is pending."""
        if loads is None:
            loads = self._loads(host.id)
        committed, vcpus, count = loads.get(host.id, (0, 0, 0))
        busy = cpu_over_commit_seconds(host.band, now) if host.band is not None else 0.0
        return HostView(
            id=host.id,
            name=host.name,
            status=str(host.state),
            cpus=host.cpus,
            memory_total_mib=host.memory_mib,
            memory_free_mib=max(0, host.memory_mib - committed),
            memory_committed_mib=committed,
            memory_reserved_mib=host.reserved_mib,
            cpu_load_percent=host.cpu_load,
            vm_count=count,
            vcpus_committed=vcpus,
            cpu_over_commit_seconds=busy,
        )

    def host_views(self, now: float) -> list[HostView]:
        """:returns: every host as the scheduler sees it, by name."""
        loads = self._loads()
        return [self.host_view(h, now, loads) for h in self.sorted_hosts()]

    def record_load(self, host: HostRecord, cpu_percent: float, now: float) -> None:
        """Keep a CPU load sample and the band it puts the host in."""
        host.cpu_load = cpu_percent
        host.band = cpu_band_since(host.band, cpu_percent, self.policy.parameters, now)
