"""Tests of the pure host state machine: every state against every event, then its timing."""

from __future__ import annotations

import dataclasses

import pytest

from engine.decide.hoststate import (
    DEFAULT_TIMING,
    HostEvent,
    HostState,
    HostStatus,
    HostTiming,
    InvalidTransition,
    Transition,
    added,
    deadline,
    resume,
    step,
)

S, E = HostState, HostEvent
NOW = 100.0
ERR = InvalidTransition

#: A typical status in each state, one second into it (and into any trouble).
TYPICAL = {
    S.INSTALLING: HostStatus(S.INSTALLING, since=99.0),
    S.CONNECTING: HostStatus(S.CONNECTING, since=99.0, trouble_since=99.0),
    S.UP: HostStatus(S.UP, since=99.0, link_up=True),
    S.NON_RESPONSIVE: HostStatus(S.NON_RESPONSIVE, since=99.0, trouble_since=50.0),
    S.PREPARING_FOR_MAINTENANCE: HostStatus(S.PREPARING_FOR_MAINTENANCE, 99.0, link_up=True),
    S.MAINTENANCE: HostStatus(S.MAINTENANCE, since=99.0, link_up=True),
    S.DOWN: HostStatus(S.DOWN, since=99.0),
    S.REMOVED: HostStatus(S.REMOVED, since=99.0),
}

EVENTS = [
    E.ADDED,
    E.CONNECTED,
    E.CONNECT_FAILED,
    E.LINK_LOST,
    E.HEARTBEAT_MISSED,
    E.HEARTBEAT_OK,
    E.TICK,
    E.MAINTENANCE_REQUESTED,
    E.VMS_EVACUATED,
    E.ACTIVATE_REQUESTED,
    E.FENCED,
    E.REMOVED,
]

# Two letters per state; XX is a refusal (InvalidTransition).
In, Co, Up, NR, PM, Ma, Dn, Rm, XX = (*S, ERR)

# fmt: off
#: The expected state after each event, columns in EVENTS order.
TABLE = {
    #     added conn fail lost miss ok   tick main evac activ fenced removed
    In: [XX,   Up,  In,  In,  In,  In,  In,  Ma,  XX,  In,   Dn,    Rm],
    Co: [XX,   Up,  Co,  Co,  Co,  Up,  Co,  Ma,  XX,  Co,   Dn,    XX],
    Up: [XX,   Up,  Co,  Co,  Up,  Up,  Up,  PM,  XX,  Up,   Dn,    XX],
    NR: [XX,   Up,  NR,  NR,  NR,  Up,  NR,  Ma,  XX,  XX,   Dn,    XX],
    PM: [XX,   PM,  PM,  PM,  PM,  PM,  PM,  PM,  Ma,  Up,   Dn,    XX],
    Ma: [XX,   Ma,  Ma,  Ma,  Ma,  Ma,  Ma,  Ma,  XX,  Up,   Dn,    Rm],
    Dn: [XX,   Up,  Dn,  Dn,  Dn,  Dn,  Dn,  Ma,  XX,  Co,   Dn,    Rm],
    Rm: [XX] * len(EVENTS),
}
# fmt: on

PAIRS = [(state, event, TABLE[state][i]) for state in S for i, event in enumerate(EVENTS)]


def test_table_covers_every_state_and_event():
    """The expectation table has a row per state and a column per event."""
    assert set(TABLE) == set(S) and set(EVENTS) == set(E)
    assert all(len(row) == len(EVENTS) for row in TABLE.values())
    assert set(TYPICAL) == set(S)


@pytest.mark.parametrize(
    ("state", "event", "expected"), PAIRS, ids=[f"{s}-{e}" for s, e, _ in PAIRS]
)
def test_every_pair(state, event, expected):
    """Each state answers each event with the expected state, or refuses with a typed error."""
    before = TYPICAL[state]
    if expected is ERR:
        with pytest.raises(InvalidTransition) as refused:
            step(before, event, NOW)
        assert refused.value.state is state and refused.value.event is event
        assert refused.value.reason and str(event) in str(refused.value)
        return
    transition = step(before, event, NOW)
    assert transition.after.state is expected
    assert transition.before is before and transition.event is event and transition.at == NOW
    assert transition.reason
    assert transition.changed == (expected is not state)
    assert transition.after.since == (NOW if transition.changed else before.since)


def test_events_are_accepted_as_strings():
    """Events may be given as their string names (the link's event kinds)."""
    assert step(TYPICAL[S.UP], "link_lost", NOW).after.state is S.CONNECTING
    with pytest.raises(ValueError):
        step(TYPICAL[S.UP], "exploded", NOW)


def test_states_compare_equal_to_ovirt_names():
    """Host states are the strings oVirt uses, so stored rows and snapshots can hold either."""
    assert S.UP == "Up" and S.NON_RESPONSIVE == "NonResponsive"
    assert S("PreparingForMaintenance") is S.PREPARING_FOR_MAINTENANCE


def test_added_starts_installing():
    """A new host starts Installing, with a reason and no previous status."""
    transition = added(5.0, detail="ws://127.0.0.1:54321/jsonrpc")
    assert transition.before is None and transition.changed
    assert transition.after == HostStatus(S.INSTALLING, since=5.0)
    assert transition.reason == "host added (ws://127.0.0.1:54321/jsonrpc)"


def test_detail_is_appended_to_the_reason():
    """What the reporter said ends up in the reason, for the audit log."""
    transition = step(TYPICAL[S.UP], E.LINK_LOST, NOW, detail="connection reset")
    assert transition.reason.endswith("(connection reset)")
    assert "grace period 15 s" in transition.reason


def test_inputs_are_not_modified():
    """step returns new statuses; the ones given stay as they were."""
    before = TYPICAL[S.UP]
    copy = dataclasses.replace(before)
    step(before, E.HEARTBEAT_MISSED, NOW)
    assert before == copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.state = S.DOWN  # type: ignore[misc]


# -- timing ----------------------------------------------------------------------------------


def run(status: HostStatus, *inputs: tuple[float, HostEvent], timing=DEFAULT_TIMING):
    """Feed timed inputs; :returns: the transitions."""
    transitions: list[Transition] = []
    for now, event in inputs:
        transition = step(status, event, now, timing=timing)
        transitions.append(transition)
        status = transition.after
    return transitions


def states(transitions: list[Transition]) -> list[HostState]:
    """The state after each transition."""
    return [t.after.state for t in transitions]


def test_lost_link_gets_a_grace_period_then_nonresponsive():
    """A lost link makes an Up host Connecting; 15 s later, unanswered, it is NonResponsive."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    lost, early, late = run(up, (100.0, E.LINK_LOST), (114.9, E.TICK), (115.0, E.TICK))
    assert states([lost, early, late]) == [S.CONNECTING, S.CONNECTING, S.NON_RESPONSIVE]
    assert deadline(lost.after) == 115.0
    assert late.reason == "no answer for 15.0 s (grace period 15 s)"
    assert late.after.trouble_since == 100.0 and late.after.since == 115.0
    assert deadline(late.after) is None


def test_link_back_within_grace_is_up_again():
    """A link restored within the grace period brings the host back Up with trouble cleared."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    _, back = run(up, (100.0, E.LINK_LOST), (103.5, E.CONNECTED))
    assert back.after == HostStatus(S.UP, since=103.5, link_up=True)
    assert "after 3.5 s" in back.reason


def test_heartbeat_misses_suspect_after_two_and_grace_counts_from_the_first():
    """One miss keeps an Up host Up; the second makes it Connecting; the grace period runs from
    the first miss."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    first, second, tick = run(
        up, (10.0, E.HEARTBEAT_MISSED), (12.0, E.HEARTBEAT_MISSED), (25.0, E.TICK)
    )
    assert states([first, second, tick]) == [S.UP, S.CONNECTING, S.NON_RESPONSIVE]
    assert not first.changed and first.after.missed == 1 and first.after.trouble_since == 10.0
    assert "2 heartbeat(s) missed" in second.reason
    assert second.after.link_up and tick.after.missed == 2


def test_a_miss_after_the_grace_period_needs_no_tick():
    """A fact arriving after the grace period has run out declares the host at once."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    states_seen = states(
        run(up, (10.0, E.HEARTBEAT_MISSED), (12.0, E.HEARTBEAT_MISSED), (26.0, E.HEARTBEAT_MISSED))
    )
    assert states_seen == [S.UP, S.CONNECTING, S.NON_RESPONSIVE]
    connecting = HostStatus(S.CONNECTING, since=0.0, trouble_since=0.0)
    [failed] = run(connecting, (15.0, E.CONNECT_FAILED))
    assert failed.after.state is S.NON_RESPONSIVE and "no answer for 15.0 s" in failed.reason


def test_answered_heartbeat_clears_a_miss():
    """An answer after one miss clears the trouble: no deadline remains."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    missed, answered = run(up, (10.0, E.HEARTBEAT_MISSED), (12.0, E.HEARTBEAT_OK))
    assert deadline(missed.after) == 25.0
    assert answered.after == HostStatus(S.UP, since=0.0, link_up=True)
    assert deadline(answered.after) is None


def test_nonresponsive_host_answering_again_is_up():
    """A NonResponsive host whose heartbeat is answered again is Up."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    *_, declared, back = run(
        up,
        (10.0, E.HEARTBEAT_MISSED),
        (12.0, E.HEARTBEAT_MISSED),
        (25.0, E.TICK),
        (40.0, E.HEARTBEAT_OK),
    )
    assert declared.after.state is S.NON_RESPONSIVE
    assert back.after.state is S.UP and "after 30.0 s" in back.reason


def test_custom_timing():
    """Timing is configurable: three misses to suspect, a 5 s grace period."""
    timing = HostTiming(misses_to_suspect=3, grace_period=5.0)
    up = HostStatus(S.UP, since=0.0, link_up=True)
    misses = [(float(t), E.HEARTBEAT_MISSED) for t in (1, 2, 3)]
    seen = states(run(up, *misses, (5.9, E.TICK), (6.0, E.TICK), timing=timing))
    assert seen == [S.UP, S.UP, S.CONNECTING, S.CONNECTING, S.NON_RESPONSIVE]


def test_default_timing_beats_ovirt():
    """By default a silent agent is declared within 30 s (oVirt: 90-120 s)."""
    t = DEFAULT_TIMING
    worst = t.heartbeat_interval + t.heartbeat_timeout + t.grace_period
    assert worst <= 30.0 and t.grace_period < 60.0


@pytest.mark.parametrize(
    "bad",
    [
        {"grace_period": 0},
        {"heartbeat_interval": -1},
        {"heartbeat_timeout": 0},
        {"install_timeout": 0},
        {"misses_to_suspect": 0},
    ],
)
def test_timing_is_validated(bad):
    """Non-positive durations and a zero miss count are refused."""
    with pytest.raises(ValueError):
        HostTiming(**bad)


def test_install_timeout():
    """A host that never connects is NonResponsive after install_timeout; connecting later
    brings it Up."""
    installing = added(0.0).after
    assert deadline(installing) == 30.0
    failed, early, late, up = run(
        installing,
        (1.0, E.CONNECT_FAILED),
        (29.9, E.TICK),
        (30.0, E.TICK),
        (45.0, E.CONNECTED),
    )
    assert states([failed, early, late, up]) == [
        S.INSTALLING,
        S.INSTALLING,
        S.NON_RESPONSIVE,
        S.UP,
    ]
    assert late.after.trouble_since == 0.0 and "within 30 s" in late.reason


def test_maintenance_flow():
    """Up -> PreparingForMaintenance -> Maintenance -> (activate) Up, with the link up."""
    up = HostStatus(S.UP, since=0.0, link_up=True)
    seen = run(
        up,
        (1.0, E.MAINTENANCE_REQUESTED),
        (2.0, E.MAINTENANCE_REQUESTED),
        (5.0, E.VMS_EVACUATED),
        (9.0, E.ACTIVATE_REQUESTED),
    )
    assert states(seen) == [S.PREPARING_FOR_MAINTENANCE] * 2 + [S.MAINTENANCE, S.UP]
    assert not seen[1].changed and "already" in seen[1].reason


def test_host_dying_while_preparing_for_maintenance_becomes_nonresponsive():
    """A host that stops answering mid-evacuation keeps its state for the grace period, then
    is NonResponsive (its remaining VMs need HA), maintenance abandoned."""
    preparing = HostStatus(S.PREPARING_FOR_MAINTENANCE, since=0.0, link_up=True)
    lost, tick = run(preparing, (10.0, E.LINK_LOST), (25.0, E.TICK))
    assert lost.after.state is S.PREPARING_FOR_MAINTENANCE and not lost.after.link_up
    assert tick.after.state is S.NON_RESPONSIVE and "maintenance abandoned" in tick.reason


def test_preparing_host_back_within_grace_keeps_preparing():
    """A link restored within the grace period leaves the evacuation going."""
    preparing = HostStatus(S.PREPARING_FOR_MAINTENANCE, since=0.0, link_up=True)
    _, back, tick = run(preparing, (10.0, E.LINK_LOST), (12.0, E.CONNECTED), (40.0, E.TICK))
    assert states([back, tick]) == [S.PREPARING_FOR_MAINTENANCE] * 2


def test_activating_without_a_link_waits_a_grace_period():
    """Activating a host whose link is down makes it Connecting; if its agent never comes,
    it is NonResponsive after the grace period."""
    maintenance = HostStatus(S.MAINTENANCE, since=0.0)
    activated, tick = run(maintenance, (10.0, E.ACTIVATE_REQUESTED), (25.0, E.TICK))
    assert activated.after.state is S.CONNECTING and activated.after.trouble_since == 10.0
    assert tick.after.state is S.NON_RESPONSIVE


def test_cancelling_maintenance_keeps_the_running_grace_period():
    """Activating a preparing host with a lost link keeps the grace period already running."""
    preparing = HostStatus(S.PREPARING_FOR_MAINTENANCE, since=0.0, link_up=True)
    _, activated = run(preparing, (10.0, E.LINK_LOST), (12.0, E.ACTIVATE_REQUESTED))
    assert activated.after.state is S.CONNECTING and deadline(activated.after) == 25.0


def test_maintenance_clears_trouble_and_silences_link_facts():
    """In Maintenance the link's ups and downs are recorded but change nothing, and no deadline
    runs."""
    nonresponsive = TYPICAL[S.NON_RESPONSIVE]
    parked, lost, tick = run(
        nonresponsive, (100.0, E.MAINTENANCE_REQUESTED), (101.0, E.LINK_LOST), (999.0, E.TICK)
    )
    assert states([parked, lost, tick]) == [S.MAINTENANCE] * 3
    assert parked.after.trouble_since is None and deadline(tick.after) is None


def test_fenced_host_is_down_and_comes_back_up_when_it_connects():
    """Power confirmed off makes a host Down; its agent connecting again makes it Up."""
    nonresponsive = TYPICAL[S.NON_RESPONSIVE]
    fenced, again, back = run(
        nonresponsive, (100.0, E.FENCED), (101.0, E.FENCED), (200.0, E.CONNECTED)
    )
    assert states([fenced, again, back]) == [S.DOWN, S.DOWN, S.UP]
    assert fenced.after.trouble_since is None and not again.changed


def test_refusals_explain_themselves():
    """Refused commands say what to do instead."""
    with pytest.raises(InvalidTransition, match="Maintenance first"):
        step(TYPICAL[S.UP], E.REMOVED, NOW)
    with pytest.raises(InvalidTransition, match="by itself"):
        step(TYPICAL[S.NON_RESPONSIVE], E.ACTIVATE_REQUESTED, NOW)
    with pytest.raises(InvalidTransition, match="was removed"):
        step(TYPICAL[S.REMOVED], E.CONNECTED, NOW)


def test_deadline():
    """deadline names the next time a tick matters, or None."""
    assert deadline(TYPICAL[S.INSTALLING]) == 99.0 + 30.0
    assert deadline(TYPICAL[S.CONNECTING]) == 99.0 + 15.0
    for state in (S.UP, S.NON_RESPONSIVE, S.MAINTENANCE, S.DOWN, S.REMOVED):
        assert deadline(TYPICAL[state]) is None
    timing = HostTiming(grace_period=2.0, install_timeout=3.0)
    assert deadline(TYPICAL[S.CONNECTING], timing) == 101.0
    assert deadline(TYPICAL[S.INSTALLING], timing) == 102.0


def test_resume_after_engine_restart():
    """After an engine restart a watched host gets a fresh grace period; others none."""
    up = resume(S.UP, 500.0)
    assert up == HostStatus(S.UP, since=500.0, trouble_since=500.0)
    assert step(up, E.TICK, 515.0).after.state is S.NON_RESPONSIVE
    assert step(up, E.CONNECTED, 501.0).after == HostStatus(S.UP, 500.0, link_up=True)
    assert resume(S.MAINTENANCE, 500.0).trouble_since is None
    assert resume("Down", 500.0).state is S.DOWN


def test_scenario_reads_like_an_audit_log():
    """A host's life, one reason per line, as the audit log will show it."""
    status = added(0.0).after
    lines = []
    for now, event in [
        (1.0, E.CONNECTED),
        (30.0, E.HEARTBEAT_MISSED),
        (32.0, E.HEARTBEAT_MISSED),
        (45.0, E.TICK),
        (60.0, E.HEARTBEAT_OK),
        (70.0, E.MAINTENANCE_REQUESTED),
        (80.0, E.VMS_EVACUATED),
        (90.0, E.REMOVED),
    ]:
        t = step(status, event, now)
        lines.append(f"{now:5.1f} {t.before.state} -> {t.after.state}: {t.reason}")
        status = t.after
    assert lines == [
        "  1.0 Installing -> Up: agent connected; capabilities read",
        " 30.0 Up -> Up: 1 heartbeat(s) missed in a row",
        " 32.0 Up -> Connecting: 2 heartbeat(s) missed in a row; grace period 15 s",
        " 45.0 Connecting -> NonResponsive: no answer for 15.0 s (grace period 15 s)",
        " 60.0 NonResponsive -> Up: heartbeat answered after 30.0 s of trouble",
        " 70.0 Up -> PreparingForMaintenance: maintenance requested",
        " 80.0 PreparingForMaintenance -> Maintenance: all VMs evacuated",
        " 90.0 Maintenance -> Removed: host removed",
    ]
