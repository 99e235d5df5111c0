"""Pure: what a libvirt domain event means for a VM, as a state-machine event plus exit details.

The container feeds every :class:`~vdsmlike.virt.events.DomainEvent` through
:func:`interpret`; the answer depends on what the agent itself asked for (a destroy, a shutdown),
which is how VDSM tells an admin shutdown (exit reason 6) from a guest powering itself off (7)
or QEMU dying under it (2).

Migration: on the destination, RESUMED/MIGRATED means the incoming VM arrived (it goes Up),
and a domain that stops before that failed to migrate (exit reason 8). On the source,
SUSPENDED/MIGRATED is the pause of the final switch-over, not a user's pause: it changes nothing
(the STOPPED/MIGRATED that follows ends the VM with exit reason 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..virt.events import DomainEvent, LifecycleEvent, StoppedDetail, SuspendedDetail
from .states import EXIT_MESSAGES, ExitCode, ExitReason, VmEvent


@dataclass(frozen=True)
class Exit:
    """How a VM went Down: VDSM's exitCode, exitReason and exitMessage."""

    code: ExitCode
    reason: ExitReason
    message: str

    @classmethod
    def of(cls, reason: ExitReason, message: str | None = None) -> Exit:
        """An exit for ``reason``; the code is ERROR unless the reason is a normal stop."""
        normal = reason in _NORMAL_REASONS
        return cls(
            ExitCode.NORMAL if normal else ExitCode.ERROR,
            reason,
            message or EXIT_MESSAGES[reason],
        )


_NORMAL_REASONS = frozenset(
    {
        ExitReason.SUCCESS,
        ExitReason.ADMIN_SHUTDOWN,
        ExitReason.USER_SHUTDOWN,
        ExitReason.MIGRATION_SUCCEEDED,
        ExitReason.SAVE_STATE_SUCCEEDED,
        ExitReason.DESTROYED_ON_REBOOT,
    }
)


@dataclass(frozen=True)
class Requests:
    """
    What the agent has asked of a VM that is still in progress.

    :ivar incoming: the VM is being received by migration and has not arrived yet.
    """

    destroy: bool = False
    shutdown: bool = False
    incoming: bool = False


@dataclass(frozen=True)
class Meaning:
    """
    The VM events a domain event amounts to, in order, and the exit if it ends the VM.

    :ivar pause_code: VDSM's ``pauseCode`` when the event pauses the VM, else None.
    """

    events: tuple[VmEvent, ...] = ()
    exit: Exit | None = None
    pause_code: str | None = None


#: libvirt's VIR_DOMAIN_EVENT_RESUMED_MIGRATED: a migrated domain resumed on the destination.
RESUMED_MIGRATED = 1

_PAUSE_CODES = {
    SuspendedDetail.IOERROR: "EIO",
    SuspendedDetail.POSTCOPY: "POSTCOPY",
}


def interpret(event: DomainEvent, requests: Requests) -> Meaning:
    """
    Translate one libvirt domain event.

    :param requests: what the agent asked for, so a stop can be attributed.
    :returns: the VM events to apply (possibly none) and, for a stop, the exit details.
    """
    if event.kind == "reboot":
        return Meaning((VmEvent.REBOOT_REQUESTED, VmEvent.REBOOTED))
    kind = event.kind
    if kind == LifecycleEvent.STARTED:
        return Meaning((VmEvent.LAUNCHED,))
    if kind == LifecycleEvent.SUSPENDED:
        if event.detail == SuspendedDetail.MIGRATED:
            return Meaning()
        return Meaning((VmEvent.PAUSED,), pause_code=_PAUSE_CODES.get(event.detail, "NOERR"))
    if kind == LifecycleEvent.RESUMED:
        if event.detail == RESUMED_MIGRATED:
            return Meaning((VmEvent.MIGRATION_ARRIVED,))
        return Meaning((VmEvent.RESUMED,))
    if kind == LifecycleEvent.SHUTDOWN:
        # QEMU has finished shutting down (also reported on destroy, before STOPPED); the
        # STOPPED event that follows says how the VM ended.
        return Meaning()
    if kind == LifecycleEvent.STOPPED:
        return Meaning((VmEvent.STOPPED,), exit=_stopped_exit(event.detail, requests))
    if kind == LifecycleEvent.CRASHED:
        return Meaning((VmEvent.STOPPED,), exit=Exit.of(ExitReason.GENERIC_ERROR, "VM crashed"))
    return Meaning()


def _stopped_exit(detail: int, requests: Requests) -> Exit:
    if requests.incoming:
        return Exit.of(ExitReason.MIGRATION_FAILED)
    if requests.destroy:
        return Exit.of(ExitReason.ADMIN_SHUTDOWN)
    if detail == StoppedDetail.SHUTDOWN:
        reason = ExitReason.ADMIN_SHUTDOWN if requests.shutdown else ExitReason.USER_SHUTDOWN
        return Exit.of(reason)
    if detail == StoppedDetail.MIGRATED:
        return Exit.of(ExitReason.MIGRATION_SUCCEEDED)
    if detail == StoppedDetail.SAVED:
        return Exit.of(ExitReason.SAVE_STATE_SUCCEEDED)
    if detail == StoppedDetail.DESTROYED:
        return Exit.of(ExitReason.LOST_QEMU_CONNECTION, "VM was destroyed outside the agent")
    if detail == StoppedDetail.CRASHED:
        return Exit.of(ExitReason.GENERIC_ERROR, "VM crashed")
    if detail == StoppedDetail.FAILED:
        return Exit.of(ExitReason.LOST_QEMU_CONNECTION)
    return Exit.of(ExitReason.GENERIC_ERROR)
