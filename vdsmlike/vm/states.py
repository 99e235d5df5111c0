"""Pure: VDSM's VM states, the events that move a VM between them, and the transition table.

The state strings are VDSM's wire values (``lib/vdsm/virt/vmstatus.py``), spaces and case
included. ``Down`` is final: a VM leaves it only by being removed with ``VM.destroy``, so a second
Down can never be reported.
"""

from __future__ import annotations

import enum

from ..virt.events import DomainState


class VmState(enum.Enum):
    """The eleven VM states, valued by their wire strings."""

    WAIT_FOR_LAUNCH = "WaitForLaunch"
    POWERING_UP = "Powering up"
    UP = "Up"
    POWERING_DOWN = "Powering down"
    REBOOT_IN_PROGRESS = "RebootInProgress"
    PAUSED = "Paused"
    MIGRATION_SOURCE = "Migration Source"
    MIGRATION_DESTINATION = "Migration Destination"
    SAVING_STATE = "Saving State"
    RESTORING_STATE = "Restoring state"
    DOWN = "Down"


class VmEvent(enum.Enum):
    """What can happen to a VM: requests the agent acts on, and facts libvirt reports."""

    LAUNCHED = "launched"  # the domain started running
    LAUNCHED_PAUSED = "launched paused"  # started with launch flags asking for a pause
    BOOTED = "booted"  # the guest is considered up (guest wait timeout passed)
    PAUSED = "paused"  # vCPUs stopped (user pause, I/O error, ...)
    RESUMED = "resumed"  # vCPUs running again
    SHUTDOWN_REQUESTED = "shutdown requested"  # the agent asked the guest to power off
    SHUTDOWN_GAVE_UP = "shutdown gave up"  # the guest did not power off in time
    REBOOT_REQUESTED = "reboot requested"  # reset or reboot asked for, or the guest rebooted
    REBOOTED = "rebooted"  # the reboot finished
    STOPPED = "stopped"  # the domain is gone: shut down, destroyed, crashed, failed to start
    MIGRATION_STARTED = "migration started"
    MIGRATION_FAILED = "migration failed"
    MIGRATION_ARRIVED = "migration arrived"
    SAVE_STARTED = "save started"
    SAVE_FAILED = "save failed"
    RESTORED = "restored"


class InvalidTransition(Exception):
    """The event cannot happen in the VM's current state."""

    def __init__(self, state: VmState, event: VmEvent) -> None:
        super().__init__(f"{event.value!r} is not possible in state {state.value!r}")
        self.state = state
        self.event = event


S, E = VmState, VmEvent

_RUNNING_STATES = (S.POWERING_UP, S.UP, S.POWERING_DOWN, S.REBOOT_IN_PROGRESS)

TRANSITIONS: dict[tuple[VmState, VmEvent], VmState] = {
    (S.WAIT_FOR_LAUNCH, E.LAUNCHED): S.POWERING_UP,
    (S.WAIT_FOR_LAUNCH, E.LAUNCHED_PAUSED): S.PAUSED,
    (S.WAIT_FOR_LAUNCH, E.STOPPED): S.DOWN,
    (S.POWERING_UP, E.BOOTED): S.UP,
    (S.MIGRATION_DESTINATION, E.MIGRATION_ARRIVED): S.UP,
    (S.MIGRATION_DESTINATION, E.STOPPED): S.DOWN,
    (S.RESTORING_STATE, E.RESTORED): S.UP,
    (S.RESTORING_STATE, E.STOPPED): S.DOWN,
    (S.PAUSED, E.RESUMED): S.UP,
    (S.PAUSED, E.PAUSED): S.PAUSED,
    (S.PAUSED, E.STOPPED): S.DOWN,
    (S.PAUSED, E.SHUTDOWN_REQUESTED): S.POWERING_DOWN,
    (S.PAUSED, E.REBOOT_REQUESTED): S.REBOOT_IN_PROGRESS,
    (S.PAUSED, E.MIGRATION_STARTED): S.MIGRATION_SOURCE,
    (S.POWERING_DOWN, E.SHUTDOWN_REQUESTED): S.POWERING_DOWN,
    (S.POWERING_DOWN, E.SHUTDOWN_GAVE_UP): S.UP,
    (S.REBOOT_IN_PROGRESS, E.REBOOTED): S.UP,
    (S.REBOOT_IN_PROGRESS, E.REBOOT_REQUESTED): S.REBOOT_IN_PROGRESS,
    (S.MIGRATION_SOURCE, E.MIGRATION_FAILED): S.UP,
    (S.MIGRATION_SOURCE, E.STOPPED): S.DOWN,
    (S.SAVING_STATE, E.SAVE_FAILED): S.UP,
    (S.SAVING_STATE, E.STOPPED): S.DOWN,
}

for _state in _RUNNING_STATES:
    TRANSITIONS.setdefault((_state, E.PAUSED), S.PAUSED)
    TRANSITIONS.setdefault((_state, E.STOPPED), S.DOWN)
    TRANSITIONS.setdefault((_state, E.REBOOT_REQUESTED), S.REBOOT_IN_PROGRESS)
    TRANSITIONS.setdefault((_state, E.MIGRATION_STARTED), S.MIGRATION_SOURCE)
    TRANSITIONS.setdefault((_state, E.SHUTDOWN_REQUESTED), S.POWERING_DOWN)
    TRANSITIONS.setdefault((_state, E.SAVE_STARTED), S.SAVING_STATE)
    # A libvirt RESUMED arrives after cont and after a reboot; in a running state it changes
    # nothing but must not be an error.
    TRANSITIONS.setdefault((_state, E.RESUMED), _state)
# Powering up finishes by itself; other running states already count as booted.
for _state in (S.UP, S.POWERING_DOWN, S.REBOOT_IN_PROGRESS, S.PAUSED):
    TRANSITIONS.setdefault((_state, E.BOOTED), _state)


def next_state(state: VmState, event: VmEvent) -> VmState:
    """
    :returns: the state after ``event`` happens in ``state``.
    :raises InvalidTransition: if the table has no such move (in particular, from Down).
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def can(state: VmState, event: VmEvent) -> bool:
    """:returns: whether ``event`` may happen in ``state``."""
    return (state, event) in TRANSITIONS


def recovered_state(domain_state: DomainState) -> VmState:
    """
    The state to give a VM re-adopted from libvirt after an agent restart.

    A running domain is Up (its boot is long past or unknown); a paused one is Paused; anything
    that is not running any more is Down.
    """
    if domain_state in (DomainState.RUNNING, DomainState.BLOCKED, DomainState.NOSTATE):
        return S.UP
    if domain_state in (DomainState.PAUSED, DomainState.PMSUSPENDED):
        return S.PAUSED
    if domain_state == DomainState.SHUTDOWN:
        return S.POWERING_DOWN
    return S.DOWN


class ExitReason(enum.IntEnum):
    """Why a VM went Down (``lib/vdsm/virt/vmexitreason.py``)."""

    SUCCESS = 0
    GENERIC_ERROR = 1
    LOST_QEMU_CONNECTION = 2
    LIBVIRT_START_FAILED = 3
    MIGRATION_SUCCEEDED = 4
    SAVE_STATE_SUCCEEDED = 5
    ADMIN_SHUTDOWN = 6
    USER_SHUTDOWN = 7
    MIGRATION_FAILED = 8
    LIBVIRT_DOMAIN_MISSING = 9
    DESTROYED_ON_STARTUP = 10
    HOST_SHUTDOWN = 11
    POSTCOPY_MIGRATION_FAILED = 12
    DESTROYED_ON_REBOOT = 13
    DESTROYED_ON_PAUSE_TIMEOUT = 14


class ExitCode(enum.IntEnum):
    """VDSM's exit codes: 0 normal, 1 error."""

    NORMAL = 0
    ERROR = 1


EXIT_MESSAGES: dict[ExitReason, str] = {
    ExitReason.SUCCESS: "Down as a result of normal shutdown",
    ExitReason.GENERIC_ERROR: "VM failed",
    ExitReason.LOST_QEMU_CONNECTION: "Lost connection with qemu process",
    ExitReason.LIBVIRT_START_FAILED: "Failed to start VM",
    ExitReason.MIGRATION_SUCCEEDED: "Migration succeeded",
    ExitReason.SAVE_STATE_SUCCEEDED: "SaveState succeeded",
    ExitReason.ADMIN_SHUTDOWN: "Admin shut down from the engine",
    ExitReason.USER_SHUTDOWN: "User shut down from within the guest",
    ExitReason.MIGRATION_FAILED: "VM failed to migrate",
    ExitReason.LIBVIRT_DOMAIN_MISSING: "Failed to find the libvirt domain",
    ExitReason.DESTROYED_ON_STARTUP: "VM destroyed during the startup",
    ExitReason.HOST_SHUTDOWN: "VM has been terminated on the host",
    ExitReason.POSTCOPY_MIGRATION_FAILED: "Migration failed in post-copy",
    ExitReason.DESTROYED_ON_REBOOT: "VM destroyed on reboot",
    ExitReason.DESTROYED_ON_PAUSE_TIMEOUT: "VM destroyed after pause timeout",
}
