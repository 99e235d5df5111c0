"""Pure data: the engine's typed audit events, as oVirt's ``AuditLogType``.

Every state change and every decision becomes one event: a type with a fixed severity and a
message template, the ids it is about, and free-form details (the scheduler's per-host
explanation, an error text). Build one with :func:`audit_event`; the store assigns ``id`` and
``time``. Severities are oVirt's: NORMAL 0, WARNING 1, ERROR 2, ALERT 10.

The ``type`` column is plain text, so events written by a newer engine still read back.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


class Severity(enum.StrEnum):
    """How much an event needs attention; ``rank`` orders them."""

    NORMAL = "normal"
    WARNING = "warning"
    ERROR = "error"
    ALERT = "alert"

    @property
    def rank(self) -> int:
        """oVirt's numeric severity (0, 1, 2, 10)."""
        return _RANKS[self]

    def at_least(self) -> list[Severity]:
        """This severity and every graver one."""
        return [s for s in Severity if s.rank >= self.rank]


_RANKS = {Severity.NORMAL: 0, Severity.WARNING: 1, Severity.ERROR: 2, Severity.ALERT: 10}

N, W, E, A = Severity.NORMAL, Severity.WARNING, Severity.ERROR, Severity.ALERT


class AuditType(enum.Enum):
    """The event types: each a severity and a message template over the event's details."""

    def __init__(self, severity: Severity, template: str) -> None:
        self.severity = severity
        self.template = template

    # Hosts
    HOST_ADDED = (N, "Host {host} added ({address})")
    HOST_UPDATED = (N, "Host {host} updated")
    HOST_REMOVED = (N, "Host {host} removed")
    HOST_CONNECTING = (W, "Host {host} is not responding; in grace period ({reason})")
    HOST_UP = (N, "Host {host} is up")
    HOST_CONNECT_FAILED = (E, "Cannot connect to host {host}: {reason}")
    HOST_NON_RESPONSIVE = (A, "Host {host} is non-responsive: {reason}")
    HOST_RECOVERED = (N, "Host {host} is responding again")
    HOST_MAINTENANCE_STARTED = (N, "Host {host} is preparing for maintenance")
    HOST_MAINTENANCE = (N, "Host {host} is in maintenance")
    HOST_MAINTENANCE_FAILED = (E, "Host {host} cannot enter maintenance: {reason}")
    HOST_ACTIVATED = (N, "Host {host} activated")
    HOST_DOWN = (W, "Host {host} is down")
    HOST_HIGH_CPU = (W, "Host {host} CPU usage is {cpu}%")
    HOST_LOW_MEMORY = (W, "Host {host} has {free_mib} MiB of free memory")
    # VMs: definition
    VM_ADDED = (N, "VM {vm} defined")
    VM_UPDATED = (N, "VM {vm} updated")
    VM_REMOVED = (N, "VM {vm} removed")
    VM_EXTERNAL_FOUND = (W, "VM {vm} found running on host {host} but not defined in the engine")
    # VMs: placement and lifecycle
    VM_PLACED = (N, "VM {vm} placed on host {host}: {reason}")
    VM_START_REFUSED = (W, "VM {vm} cannot start: {reason}")
    VM_STARTING = (N, "VM {vm} is starting on host {host}")
    VM_STARTED = (N, "VM {vm} started on host {host}")
    VM_START_FAILED = (E, "VM {vm} failed to start on host {host}: {reason}")
    VM_STATUS_CHANGED = (N, "VM {vm} is {status} on host {host}")
    VM_PAUSED = (N, "VM {vm} paused")
    VM_PAUSED_ERROR = (E, "VM {vm} paused on host {host}: {reason}")
    VM_RESUMED = (N, "VM {vm} resumed")
    VM_STOPPED = (N, "VM {vm} stopped")
    VM_SHUTDOWN = (N, "VM {vm} shut down")
    VM_DOWN = (N, "VM {vm} is down: {reason}")
    VM_DOWN_ERROR = (E, "VM {vm} is down with error: {reason}")
    VM_NOT_RESPONDING = (W, "VM {vm} is not responding")
    VM_UNKNOWN = (W, "VM {vm} state is unknown: host {host} is not responding")
    # VMs: migration and HA
    VM_MIGRATION_STARTED = (N, "Migration of VM {vm} from {host} to {destination} started")
    VM_MIGRATION_DONE = (N, "Migration of VM {vm} to {destination} done")
    VM_MIGRATION_FAILED = (E, "Migration of VM {vm} to {destination} failed: {reason}")
    VM_MIGRATION_REFUSED = (W, "VM {vm} cannot migrate: {reason}")
    VM_HA_RESTART = (N, "Highly available VM {vm} is being restarted")
    VM_HA_RESTART_FAILED = (A, "Highly available VM {vm} failed to restart: {reason}")
    BALANCE_MIGRATION = (N, "Balancing: migrating VM {vm} from {host} to {destination}: {reason}")
    BALANCE_HOST_STUCK = (W, "Balancing: host {host} needs relief but nothing can move: {reason}")
    BALANCE_HOST_RELIEVED = (N, "Balancing: host {host} is no longer stuck")
    POWER_SAVING_HOST_OFF = (N, "Power saving: switching host {host} off: {reason}")
    POWER_SAVING_HOST_ON = (N, "Power saving: powering host {host} on: {reason}")
    # Affinity groups (engine/affinitygroups.py)
    AFFINITY_GROUP_ADDED = (N, "Affinity group {group} added: {summary}")
    AFFINITY_GROUP_CHANGED = (N, "Affinity group {group} changed: {summary}")
    AFFINITY_GROUP_REMOVED = (N, "Affinity group {group} removed")
    # The cluster manager (engine/decide/cluster.py): fencing, HA restarts, maintenance
    HOST_FENCE_STARTED = (W, "Fencing host {host} ({reason}): {steps}")
    HOST_FENCE_SOFT_RESTARTED = (N, "Agent of host {host} restarted; it has {wait} s to answer")
    HOST_FENCE_SOFT_SUCCEEDED = (N, "Host {host} answers again after soft fencing")
    HOST_FENCE_SOFT_FAILED = (W, "Soft fencing of host {host} failed: {reason}")
    HOST_POWER_STATUS = (N, "Power management of host {host} reports power {status}")
    HOST_FENCE_POWER_STARTED = (W, "Power-fencing host {host}: {reason}")
    HOST_FENCED = (W, "Host {host} fenced: {proof}; its VMs are down")
    HOST_FENCE_POWER_FAILED = (
        A,
        "Power fencing of host {host} failed: {reason}; its VMs stay Unknown, next round in "
        "{quiet} s",
    )
    HOST_FENCE_STATUS_UNKNOWN = (
        A,
        "Fencing of host {host} is unproven: {reason}; its VMs stay Unknown, next round in "
        "{quiet} s",
    )
    HOST_FENCE_NO_POWER_MANAGEMENT = (
        A,
        "Host {host} cannot be fenced: no power management and soft fencing failed; its VMs "
        "stay Unknown until it answers, next round in {quiet} s",
    )
    HOST_FENCE_DISABLED = (
        A,
        "Host {host} is not fenced: fencing is disabled; its VMs stay Unknown",
    )
    HOST_FENCE_CANCELLED = (N, "Fencing of host {host} stopped: {reason}")
    FENCING_SKIPPED_STORM = (
        A,
        "Fencing skipped: {unreachable} of {total} hosts are unreachable ({hosts}; threshold "
        "{threshold}%): a network problem is likelier than dead hosts",
    )
    FENCING_RESUMED = (N, "Fencing resumed: {unreachable} of {total} hosts unreachable")
    FENCING_DELAYED_STARTUP = (N, "No fencing before {until} s: the engine has just started")
    HA_STATE_RESUMED = (N, "Cluster manager resumed from the store: {summary}")
    HA_VM_RESTART_QUEUED = (N, "Highly available VM {vm} will be restarted: {reason}")
    HA_VM_RESTART = (
        N,
        "Restarting highly available VM {vm} on host {host} (attempt {attempt}): {reason}",
    )
    HA_VM_RESTART_RETRY = (
        W,
        "Highly available VM {vm} cannot be restarted yet (attempt {attempt}): {reason}; next "
        "attempt {when}",
    )
    HA_VM_RESTART_BLOCKED = (
        N,
        "Highly available VM {vm} waits for VMs of higher priority: {waiting}",
    )
    HA_VM_RESTART_WAITING = (N, "Highly available VM {vm} waits for a start slot: {reason}")
    HA_VM_RESTARTED = (
        N,
        "Highly available VM {vm} is up again on host {host}, {seconds} s after its trouble began",
    )
    HA_VM_NOT_RESTARTED = (N, "VM {vm} is not restarted: {reason}")
    VM_STOPPING = (N, "VM {vm} is stopping on host {host}: {reason}")
    MAINTENANCE_MIGRATION = (
        N,
        "Maintenance of host {host}: migrating VM {vm} to {destination}: {reason}",
    )
    MAINTENANCE_VM_CANNOT_MOVE = (W, "Maintenance of host {host}: VM {vm} cannot move: {reason}")
    MAINTENANCE_DEADLINE_EXCEEDED = (
        E,
        "Host {host} was not emptied within {deadline} s: {report}; {outcome}",
    )
    MAINTENANCE_MOVE_BACK = (
        N,
        "Moving VM {vm} back to host {host} after its maintenance: {reason}",
    )
    MAINTENANCE_MOVE_BACK_REFUSED = (W, "VM {vm} is not moved back to host {host}: {reason}")
    # Fence actions as carried out (engine/fence/actions.py): each step with its proof
    HOST_POWER_MANAGEMENT_SET = (N, "Power management of host {host} set: {summary}")
    HOST_FENCE_STEP_STARTED = (W, "Fencing host {host}: {action} through the {agent} agent")
    HOST_FENCE_STEP_DONE = (N, "Host {host}: {action} done ({agent}), power {power}: {proof}")
    HOST_FENCE_STEP_FAILED = (E, "Host {host}: {action} failed ({agent}): {message}")
    HOST_FENCE_STEP_UNKNOWN = (W, "Host {host}: {action} outcome unknown ({agent}): {message}")
    # Jobs, users, the engine
    JOB_STARTED = (N, "Job {action} started")
    JOB_SUCCEEDED = (N, "Job {action} succeeded")
    JOB_FAILED = (E, "Job {action} failed: {reason}")
    USER_LOGIN = (N, "User {user} logged in")
    USER_LOGIN_FAILED = (W, "Failed login as {user}")
    ENGINE_STARTED = (N, "Engine started")
    ENGINE_STOPPING = (N, "Engine stopping")


class _Lenient(string.Formatter):
    """Formats missing fields as ``?`` instead of raising."""

    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str):
            return kwargs.get(key, "?")
        return super().get_value(key, args, kwargs)


def render(template: str, details: Mapping[str, Any]) -> str:
    """The template with ``{name}`` fields filled from ``details`` (``?`` when missing)."""
    return _Lenient().vformat(template, (), details)


@dataclass(frozen=True)
class NewAuditEvent:
    """An event to record: the store adds ``id`` and ``time``."""

    type: str
    severity: Severity
    message: str
    host_id: UUID | None = None
    vm_id: UUID | None = None
    job_id: UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEvent:
    """A recorded event; ``id`` grows with time, so ``since`` filters by id."""

    id: int
    time: datetime
    type: str
    severity: Severity
    message: str
    host_id: UUID | None
    vm_id: UUID | None
    job_id: UUID | None
    details: dict[str, Any]


def audit_event(
    kind: AuditType,
    *,
    host_id: UUID | None = None,
    vm_id: UUID | None = None,
    job_id: UUID | None = None,
    **details: Any,
) -> NewAuditEvent:
    """Build an event of ``kind``; its message is the type's template filled from ``details``.

    ``audit_event(AuditType.VM_PLACED, vm_id=v, host_id=h, vm="web1", host="host2",
    reason="most free memory")`` gives "VM web1 placed on host host2: most free memory".
    Details must be JSON-serialisable; they are stored with the event.
    """
    return NewAuditEvent(
        type=kind.name,
        severity=kind.severity,
        message=render(kind.template, details),
        host_id=host_id,
        vm_id=vm_id,
        job_id=job_id,
        details=details,
    )
