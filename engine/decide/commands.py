"""Pure data: what the cluster manager decides, as commands for the shell (or the simulator).

:class:`~engine.decide.cluster.ClusterManager` never acts: its ``tick`` returns a list of these,
in the order they were decided, and the caller carries them out. The live engine turns them into
agent RPC calls, fence-agent calls and rows; the simulator (:mod:`engine.sim`) into simulated
effects. Every decision comes with an :class:`Event` that says why (the engine's rule: every
decision is explained), built from the audit types of :mod:`engine.store.auditlog`.

Ids are whatever the caller uses for hosts and VMs (UUID strings in the engine, names in the
simulator); messages use names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.store.auditlog import AuditType, Severity, render

from .scheduler import Decision

#: Soft fencing: ask the host to restart its agent over its management link.
SOFT = "soft"
#: Power fencing: power the host off through its power management and confirm it is off.
POWER = "power"


@dataclass(frozen=True, slots=True)
class FenceHost:
    """
    Fence a host.

    :ivar host: the host's id.
    :ivar method: :data:`SOFT` (restart the agent; proves nothing by itself) or :data:`POWER`
        (power off, confirm off: the proof that its VMs are dead; then power on again when
        ``power_on_after``).
    :ivar reason: why, for the fence log.
    :ivar power_on_after: power fencing only: switch the host on again once it is confirmed off,
        as oVirt's restart does (its VMs are dead either way).
    """

    host: str
    method: str
    reason: str
    power_on_after: bool = True


@dataclass(frozen=True, slots=True)
class ConfirmPowerStatus:
    """Ask a host's power management whether it is on (an answer "off" is a fence proof)."""

    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class StartVm:
    """
    Start a VM on a host (``VM.create``).

    :ivar decision: the scheduler's decision, with its per-host explanation.
    """

    vm: str
    host: str
    reason: str
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class StopVm:
    """Stop a VM (``VM.destroy``): an admin's stop, never a decision of HA."""

    vm: str
    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class MigrateVm:
    """
    Live-migrate a VM from ``src`` to ``dst`` (``VM.migrate``).

    :ivar decision: the scheduler's decision that chose ``dst``, with its explanation.
    """

    vm: str
    src: str
    dst: str
    reason: str
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class PowerHost:
    """
    Switch a host on or off through its power management for power saving (not a fence: the
    host is empty and in Maintenance before it is switched off).

    :ivar action: :data:`POWER_ON_HOST` or :data:`POWER_OFF_HOST`.
    """

    host: str
    action: str
    reason: str


#: :class:`PowerHost` actions.
POWER_ON_HOST = "on"
POWER_OFF_HOST = "off"


@dataclass(frozen=True, slots=True)
class MarkVmDown:
    """
    Record a VM as Down: the old copy is proven dead (its host was fenced, or its host answered
    and does not run it, or it crashed).

    :ivar host: the host it was on, or None.
    :ivar exit: why it is down (an :class:`~engine.decide.clusterstate.ExitReason` value).
    """

    vm: str
    host: str | None
    exit: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkVmUnknown:
    """Record a VM as Unknown: its host stopped answering; nobody may start it elsewhere yet."""

    vm: str
    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class SetHostStatus:
    """Record a host's new status (the host state machine's)."""

    host: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class Event:
    """
    An audit event: one line of the engine's event log.

    :ivar type: the :class:`~engine.store.auditlog.AuditType` name.
    :ivar severity: its severity.
    :ivar message: the rendered message.
    :ivar host: the host's id, or None.
    :ivar vm: the VM's id, or None.
    :ivar details: the values the message was rendered from, and more (the scheduler's whole
        explanation, numbers), JSON-serialisable.
    """

    type: str
    severity: Severity
    message: str
    host: str | None = None
    vm: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def event(
    kind: AuditType,
    *,
    host: str | None = None,
    vm: str | None = None,
    names: tuple[str | None, str | None] = (None, None),
    **details: Any,
) -> Event:
    """
    Build an :class:`Event` of ``kind``, its message rendered from ``details``.

    :param host: the id of the host it is about.
    :param vm: the id of the VM it is about.
    :param names: the host's and the VM's names, rendered where the template says ``{host}``
        and ``{vm}`` (the ids when a name is None).
    :param details: the template's other fields, and anything worth keeping with the event.
    :returns: the event; its ``details`` hold ``host`` and ``vm`` names too.
    """
    host_name, vm_name = names
    values = dict(details)
    if host is not None:
        values.setdefault("host", host_name or host)
    if vm is not None:
        values.setdefault("vm", vm_name or vm)
    return Event(
        type=kind.name,
        severity=kind.severity,
        message=render(kind.template, values),
        host=host,
        vm=vm,
        details=values,
    )


Command = (
    FenceHost
    | ConfirmPowerStatus
    | StartVm
    | StopVm
    | MigrateVm
    | PowerHost
    | MarkVmDown
    | MarkVmUnknown
    | SetHostStatus
    | Event
)
