"""The VM state machine: every (state, event) pair, and what recovery maps libvirt states to."""

import itertools

import pytest

from vdsmlike.virt.events import DomainState
from vdsmlike.vm.states import (
    EXIT_MESSAGES,
    TRANSITIONS,
    ExitReason,
    InvalidTransition,
    VmEvent,
    VmState,
    can,
    next_state,
    recovered_state,
)

WIRE = [
    "WaitForLaunch",
    "Powering up",
    "Up",
    "Powering down",
    "RebootInProgress",
    "Paused",
    "Migration Source",
    "Migration Destination",
    "Saving State",
    "Restoring state",
    "Down",
]


def test_states_are_vdsms_eleven_wire_strings():
    """The enum values are exactly VDSM's wire strings, spaces and case included."""
    assert [s.value for s in VmState] == WIRE


@pytest.mark.parametrize("state,event", list(itertools.product(VmState, VmEvent)))
def test_every_pair_either_moves_or_raises(state, event):
    """Every (state, event) pair either has a target state or raises InvalidTransition."""
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) == TRANSITIONS[(state, event)]
        assert can(state, event)
    else:
        with pytest.raises(InvalidTransition) as info:
            next_state(state, event)
        assert info.value.state == state and info.value.event == event
        assert not can(state, event)


@pytest.mark.parametrize("event", list(VmEvent))
def test_down_is_final(event):
    """Nothing leaves Down: a second Down (or anything else) is refused."""
    with pytest.raises(InvalidTransition):
        next_state(VmState.DOWN, event)


def test_normal_life_of_a_vm():
    """A VM launches, boots, pauses, resumes, powers down and ends Down."""
    state = VmState.WAIT_FOR_LAUNCH
    path = [
        VmEvent.LAUNCHED,
        VmEvent.BOOTED,
        VmEvent.PAUSED,
        VmEvent.RESUMED,
        VmEvent.SHUTDOWN_REQUESTED,
        VmEvent.STOPPED,
    ]
    seen = []
    for event in path:
        state = next_state(state, event)
        seen.append(state)
    assert seen == [
        VmState.POWERING_UP,
        VmState.UP,
        VmState.PAUSED,
        VmState.UP,
        VmState.POWERING_DOWN,
        VmState.DOWN,
    ]


def test_launch_paused_goes_straight_to_paused():
    """A VM started with launch flags asking for a pause is Paused, not Powering up."""
    assert next_state(VmState.WAIT_FOR_LAUNCH, VmEvent.LAUNCHED_PAUSED) == VmState.PAUSED


def test_shutdown_given_up_returns_to_up():
    """A guest that ignores the power-off request is reported Up again."""
    assert next_state(VmState.POWERING_DOWN, VmEvent.SHUTDOWN_GAVE_UP) == VmState.UP


def test_failed_migration_returns_to_up():
    """A failed outgoing migration leaves the VM Up on the source."""
    assert next_state(VmState.MIGRATION_SOURCE, VmEvent.MIGRATION_FAILED) == VmState.UP


def test_cannot_resume_a_vm_that_is_launching():
    """RESUMED makes no sense before the VM has launched."""
    with pytest.raises(InvalidTransition):
        next_state(VmState.WAIT_FOR_LAUNCH, VmEvent.RESUMED)


@pytest.mark.parametrize(
    "domain_state,expected",
    [
        (DomainState.RUNNING, VmState.UP),
        (DomainState.BLOCKED, VmState.UP),
        (DomainState.PAUSED, VmState.PAUSED),
        (DomainState.PMSUSPENDED, VmState.PAUSED),
        (DomainState.SHUTDOWN, VmState.POWERING_DOWN),
        (DomainState.SHUTOFF, VmState.DOWN),
        (DomainState.CRASHED, VmState.DOWN),
    ],
)
def test_recovered_state_from_libvirt(domain_state, expected):
    """Recovery maps each libvirt domain state to the VDSM state VDSM would report."""
    assert recovered_state(domain_state) == expected


def test_every_exit_reason_has_a_message():
    """Each of VDSM's 15 exit reasons has a message."""
    assert set(EXIT_MESSAGES) == set(ExitReason)
    assert [int(r) for r in ExitReason] == list(range(15))
