"""Pure data: what the shell (or the simulator) saw, fed to the cluster manager's ``observe``.

Facts are observations, never requests: the manager accepts each one in any state (a fact about
an unknown host or VM is ignored) and decides what follows on its next ``tick``. Admin requests
(maintenance, activate, start, stop) are methods of
:class:`~engine.decide.cluster.ClusterManager` instead, because they can be refused.

The facts and where the live engine gets them:

============================ ===================================================================
fact                         source
============================ ===================================================================
:class:`HostSeen`            the host link: connected, link lost, heartbeat answered or missed
:class:`VmSeen`              an agent's ``VM_status`` event (one VM changed on that host)
:class:`HostVms`             an agent's complete ``Host.getAllVmStats`` list
:class:`JobDone`             the outcome of a start or migration the manager asked for
:class:`FenceDone`           the outcome of a soft or power fence the manager asked for
:class:`PowerSeen`           the answer of a host's power management to a status query
:class:`HostLoad`            a host's CPU load sample
:class:`VmLoad`              a VM's CPU usage sample (the balancer's per-VM load)
============================ ===================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.store.rows import VmStatus

from .hoststate import HostEvent

#: :class:`FenceDone` results.
FENCED = "fenced"  # power fencing: the host is confirmed off (the proof)
RESTARTED = "restarted"  # soft fencing: the agent was restarted (proves nothing yet)
FAILED = "failed"  # the fence action failed
STATUS_UNKNOWN = "status_unknown"  # the device acted, or not, but cannot say the power is off

#: :class:`PowerSeen` statuses.
POWER_ON = "on"
POWER_OFF = "off"
POWER_UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class HostSeen:
    """
    A liveness fact about a host, fed through :func:`engine.decide.hoststate.step`.

    :ivar host: the host's id.
    :ivar event: ``connected``, ``connect_failed``, ``link_lost``, ``heartbeat_missed`` or
        ``heartbeat_ok``.
    :ivar detail: what the link said (a close reason), appended to the reason.
    """

    host: str
    event: HostEvent
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VmSeen:
    """
    One VM's status as a host reports it.

    :ivar host: the reporting host's id.
    :ivar vm: the VM's id.
    :ivar status: its status there.
    :ivar exit: Down only: why (an :class:`~engine.decide.clusterstate.ExitReason` value).
    :ivar detail: Down only: the agent's exit message.
    """

    host: str
    vm: str
    status: VmStatus
    exit: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HostVms:
    """
    Every VM a host runs, as its agent lists them: a VM the manager has on that host that is
    missing from the list is not running there (the agent is the truth about its host).

    :ivar host: the reporting host's id.
    :ivar vms: VM id → status.
    """

    host: str
    vms: Mapping[str, VmStatus] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobDone:
    """
    A start, migration or stop the manager asked for has ended.

    :ivar kind: ``"start"``, ``"migrate"`` or ``"stop"`` (only a failed stop changes anything:
        one that worked ends when the host reports the VM Down).
    :ivar vm: the VM's id.
    :ivar host: the host it was started or stopped on, or the migration's destination.
    :ivar ok: whether it worked.
    :ivar error: why not.
    """

    kind: str
    vm: str
    host: str
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class FenceDone:
    """
    A fence action ended.

    :ivar host: the fenced host's id.
    :ivar method: ``"soft"`` or ``"power"``.
    :ivar result: :data:`FENCED` (power confirmed off), :data:`RESTARTED` (soft: agent
        restarted), :data:`FAILED` or :data:`STATUS_UNKNOWN`.
    :ivar detail: the device's words (the proof for :data:`FENCED`, the error otherwise).
    """

    host: str
    method: str
    result: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PowerSeen:
    """
    A host's power management answered a status query.

    :ivar status: :data:`POWER_ON`, :data:`POWER_OFF` or :data:`POWER_UNKNOWN`.
    """

    host: str
    status: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HostLoad:
    """A host's CPU load, percent of the whole host."""

    host: str
    cpu_percent: float


@dataclass(frozen=True, slots=True)
class VmLoad:
    """
    A VM's CPU usage, percent of its own vCPUs (VDSM's ``cpuUser`` + ``cpuSys``), as its host
    reports it; the balancer predicts a move's effect from it.
    """

    host: str
    vm: str
    cpu_percent: float


Fact = HostSeen | VmSeen | HostVms | JobDone | FenceDone | PowerSeen | HostLoad | VmLoad
