"""Pure data: the rows the store takes and returns, split as oVirt splits its entities.

Each entity has a ``*Static`` part (configuration, written by the admin), a ``*Dynamic`` part
(runtime state, written by monitoring on each change) and ``*Statistics`` samples (overwritten on
every poll, with a short history for charts). :class:`Host` and :class:`Vm` join the three, as
oVirt's ``vds`` and ``vms`` views do.

Timestamps are timezone-aware UTC datetimes; ids are :class:`uuid.UUID`; JSON columns are plain
``dict``/``list`` values. Fields the database fills (``created``, ``updated``) may be left None
when writing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

DEFAULT_AGENT_PORT = 54321


class HostStatus(enum.StrEnum):
    """oVirt's host states, as the engine tracks them."""

    INSTALLING = "Installing"
    CONNECTING = "Connecting"
    UP = "Up"
    NON_RESPONSIVE = "NonResponsive"
    PREPARING_FOR_MAINTENANCE = "PreparingForMaintenance"
    MAINTENANCE = "Maintenance"
    DOWN = "Down"


class VmStatus(enum.StrEnum):
    """The engine's VM states (oVirt's ``VMStatus`` names, not the agent's wire strings)."""

    DOWN = "Down"
    WAIT_FOR_LAUNCH = "WaitForLaunch"
    POWERING_UP = "PoweringUp"
    UP = "Up"
    POWERING_DOWN = "PoweringDown"
    REBOOT_IN_PROGRESS = "RebootInProgress"
    PAUSED = "Paused"
    MIGRATING_FROM = "MigratingFrom"
    MIGRATING_TO = "MigratingTo"
    RESTORING_STATE = "RestoringState"
    SAVING_STATE = "SavingState"
    UNKNOWN = "Unknown"
    NOT_RESPONDING = "NotResponding"


class JobStatus(enum.StrEnum):
    """A job's progress through its life; ``succeeded`` and ``failed`` are final."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


# -- hosts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatic:
    """A host's configuration: where its agent listens and the token it expects."""

    id: UUID
    name: str
    address: str
    port: int = DEFAULT_AGENT_PORT
    token: str = ""
    created: datetime | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class HostDynamic:
    """A host's runtime state, as monitoring last saw it."""

    host_id: UUID
    status: HostStatus = HostStatus.INSTALLING
    status_reason: str = ""
    last_seen: datetime | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)
    cpu_count: int | None = None
    mem_total_mib: int | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class HostStatistics:
    """One sample of a host's load; ``time`` is when it was taken (the store's clock if None)."""

    host_id: UUID
    cpu_user: float | None = None
    cpu_sys: float | None = None
    cpu_idle: float | None = None
    mem_free_mib: int | None = None
    mem_used_percent: float | None = None
    vm_count: int | None = None
    ksm_enabled: bool | None = None
    ksm_pages: int | None = None
    ksm_cpu_percent: float | None = None
    swap_total_mib: int | None = None
    swap_free_mib: int | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class Host:
    """One host: configuration, runtime state and latest statistics (None before the first)."""

    static: HostStatic
    dynamic: HostDynamic
    statistics: HostStatistics | None = None

    @property
    def id(self) -> UUID:
        """The host's id."""
        return self.static.id

    @property
    def name(self) -> str:
        """The host's name."""
        return self.static.name


@dataclass(frozen=True)
class HostPowerManagement:
    """A host's power management (a host without any has the defaults, never ``enabled``).

    :ivar enabled: power fencing may be used on the host.
    :ivar driver: the power driver's name (``vdsmlike.engine.power``), e.g. ``process``.
    :ivar options: the driver's options; they may hold secrets, which the API never sends back.
    :ivar fencing_enabled: the engine may fence the host by itself (not only on request).
    """

    host_id: UUID
    enabled: bool = False
    driver: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    fencing_enabled: bool = True
    updated: datetime | None = None


# -- VMs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmStatic:
    """A VM's definition: what the admin asked for.

    :ivar disks: disk descriptions as the engine's API takes them (opaque to the store).
    :ivar nics: NIC descriptions, likewise.
    :ivar custom: custom properties (hook parameters).
    :ivar ha: restart the VM elsewhere when its host fails.
    :ivar ha_priority: higher restarts first (oVirt's 0..100).
    :ivar pinned_host: the only host the VM may run on, or None.
    """

    id: UUID
    name: str
    mem_mib: int
    vcpus: int = 1
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    disks: list[dict[str, Any]] = field(default_factory=list)
    nics: list[dict[str, Any]] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    ha: bool = False
    ha_priority: int = 0
    pinned_host: UUID | None = None
    created: datetime | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class VmDynamic:
    """A VM's runtime state.

    :ivar last_notify_time: the agent's ``notify_time`` of the status event this state came from
        (a per-host monotonic clock in milliseconds); the store refuses older events.
    :ivar external: found running on a host without having been defined through the engine.
    """

    vm_id: UUID
    status: VmStatus = VmStatus.DOWN
    run_on_host: UUID | None = None
    migrating_to_host: UUID | None = None
    exit_status: str | None = None
    exit_reason: str | None = None
    exit_message: str | None = None
    last_notify_time: int | None = None
    external: bool = False
    updated: datetime | None = None


@dataclass(frozen=True)
class VmStatistics:
    """One sample of a VM's load; ``time`` is when it was taken (the store's clock if None)."""

    vm_id: UUID
    cpu_percent: float | None = None
    mem_percent: float | None = None
    balloon_cur_kib: int | None = None
    balloon_target_kib: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class Vm:
    """One VM: definition, runtime state and latest statistics (None before the first)."""

    static: VmStatic
    dynamic: VmDynamic
    statistics: VmStatistics | None = None

    @property
    def id(self) -> UUID:
        """The VM's id."""
        return self.static.id

    @property
    def name(self) -> str:
        """The VM's name."""
        return self.static.name


# -- jobs, users, sessions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A persisted action (start a VM, move a host to maintenance, ...) and its outcome.

    :ivar target_kind: what the action is about (``"vm"``, ``"host"``, ...).
    :ivar progress: 0..100.
    :ivar idempotency_key: the client's key: a repeated request finds this job again.
    """

    id: UUID
    action: str
    target_kind: str
    target_id: UUID | None
    status: JobStatus
    progress: int
    result: Any
    error: str | None
    idempotency_key: str | None
    created: datetime
    updated: datetime


@dataclass(frozen=True)
class User:
    """An account that may log in to the admin API (the password hash never leaves the store)."""

    name: str
    created: datetime


@dataclass(frozen=True)
class Session:
    """A logged-in session (the token itself is never stored, only its hash)."""

    user_name: str
    created: datetime
    expires: datetime
