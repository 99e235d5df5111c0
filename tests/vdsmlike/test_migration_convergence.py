"""Pure: the convergence state machine, from progress samples to downtime steps and aborts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vdsmlike.vm.migration import (
    ConvergenceSchedule,
    MigrationSettings,
    ScheduleAction,
    StallingItem,
)
from vdsmlike.vm.migration_convergence import (
    Abort,
    Policy,
    Sample,
    SetDowntime,
    StartPostCopy,
    begin,
    observe,
    plan,
)

GIB_KIB = 1024 * 1024
NO_LIMITS = MigrationSettings(progress_timeout=0, max_time_per_gib=0)

MINIMAL_DOWNTIME = ConvergenceSchedule(
    init=(ScheduleAction("setDowntime", 100),),
    stalling=(
        StallingItem(1, ScheduleAction("setDowntime", 150)),
        StallingItem(2, ScheduleAction("setDowntime", 200)),
        StallingItem(-1, ScheduleAction("abort")),
    ),
)


def run(state, samples):
    """Feed samples; :returns: the final state and the actions per sample."""
    taken = []
    for sample in samples:
        state, actions = observe(state, sample)
        taken.append(actions)
    return state, taken


def stalling_passes(count, remaining=500, start_elapsed=1.0):
    """A first pass, then ``count`` passes that each start with ``remaining`` bytes left."""
    samples = [Sample(1, 1000, 900, 0.5)]
    samples += [Sample(2 + i, 1000, remaining, start_elapsed + i) for i in range(count + 1)]
    return samples


def test_init_actions_come_first():
    """begin answers the schedule's init actions."""
    state, actions = begin(plan(MINIMAL_DOWNTIME, NO_LIMITS, GIB_KIB))
    assert actions == [SetDowntime(100)] and state.downtime == 100


def test_a_converging_migration_needs_nothing():
    """Passes that start with less and less data left are not stalls: no action."""
    state, _ = begin(plan(MINIMAL_DOWNTIME, NO_LIMITS, GIB_KIB))
    samples = [Sample(i, 1000, 1000 // (i * 2), i) for i in range(1, 6)]
    state, taken = run(state, samples)
    assert taken == [[]] * 5 and state.stalls == 0 and not state.aborted


def test_stalls_walk_the_schedule_one_item_per_stall():
    """Each stall past an item's limit runs that item, one per stall, then the abort at -1."""
    state, _ = begin(plan(MINIMAL_DOWNTIME, NO_LIMITS, GIB_KIB))
    state, taken = run(state, stalling_passes(5))
    flat = [a for actions in taken for a in actions]
    assert flat == [
        SetDowntime(150),
        SetDowntime(200),
        Abort("the convergence schedule aborted the migration"),
    ]
    # first pass, pass 2 (a new low, no stall), then stalls 1, 2 (150), 3 (200), 4 (abort)
    assert [bool(a) for a in taken] == [False, False, False, True, True, True, False]
    assert state.aborted and state.downtime == 200


def test_samples_within_a_pass_are_not_stalls():
    """Only a new pass can stall; more samples of the same pass change nothing."""
    state, _ = begin(plan(MINIMAL_DOWNTIME, NO_LIMITS, GIB_KIB))
    samples = [Sample(1, 1000, 900, 0.1), Sample(2, 1000, 500, 0.2)]
    samples += [Sample(2, 1000, 600, 0.3 + i / 10) for i in range(10)]
    state, taken = run(state, samples)
    assert state.stalls == 0 and not any(taken)


def test_nothing_after_an_abort():
    """An aborted migration takes no more actions, whatever comes."""
    state, _ = begin(plan(MINIMAL_DOWNTIME, NO_LIMITS, GIB_KIB))
    state, _ = run(state, stalling_passes(5))
    state, taken = run(state, stalling_passes(5, start_elapsed=100))
    assert not any(taken)


def test_postcopy_is_passed_on():
    """A postcopy item becomes StartPostCopy (the shell reports it unsupported)."""
    schedule = ConvergenceSchedule(stalling=(StallingItem(-1, ScheduleAction("postcopy")),))
    state, _ = begin(plan(schedule, NO_LIMITS, GIB_KIB))
    _, taken = run(state, stalling_passes(1))
    assert [a for actions in taken for a in actions] == [StartPostCopy()]


def test_without_a_schedule_the_downtime_ramps_up():
    """The legacy ramp: 5 equal steps to 500 ms over 100 s per GiB (2 GiB: 200 s)."""
    policy = plan(None, NO_LIMITS, 2 * GIB_KIB)
    assert policy.ramp == ((40.0, 100), (80.0, 200), (120.0, 300), (160.0, 400), (200.0, 500))
    state, actions = begin(policy)
    assert actions == []
    state, taken = run(state, [Sample(1, 10, 9, t) for t in (10, 41, 79, 130, 500, 600)])
    assert taken == [[], [SetDowntime(100)], [], [SetDowntime(300)], [SetDowntime(500)], []]


def test_small_guests_ramp_over_at_least_one_gib_worth():
    """A guest under 1 GiB ramps over one GiB's delay."""
    assert plan(None, NO_LIMITS, 128 * 1024).ramp[-1] == (100.0, 500)


def test_no_progress_for_too_long_aborts():
    """No new low of the data left for progress_timeout seconds aborts."""
    settings = MigrationSettings(progress_timeout=10, max_time_per_gib=0)
    state, _ = begin(plan(MINIMAL_DOWNTIME, settings, GIB_KIB))
    state, taken = run(
        state, [Sample(1, 100, 50, 1), Sample(1, 100, 60, 10), Sample(1, 100, 55, 11.5)]
    )
    assert taken[:2] == [[], []]
    assert taken[2] == [Abort("no progress for 10 s")]


def test_taking_too_long_aborts():
    """More than max_time_per_gib seconds per GiB of RAM in all aborts."""
    settings = MigrationSettings(progress_timeout=0, max_time_per_gib=64)
    state, _ = begin(plan(MINIMAL_DOWNTIME, settings, 2 * GIB_KIB))
    _, taken = run(state, [Sample(1, 100, 100 - t, t) for t in (1, 127, 129)])
    assert taken == [[], [], [Abort("the migration took longer than 128 s")]]


def test_limits_off():
    """0 turns the progress timeout and the time limit off."""
    policy = plan(MINIMAL_DOWNTIME, NO_LIMITS, GIB_KIB)
    assert (policy.progress_timeout, policy.max_time) == (0, 0)
    state, _ = begin(policy)
    _, taken = run(state, [Sample(1, 100, 50, t) for t in (1, 10_000, 100_000)])
    assert not any(taken)


@given(
    st.lists(
        st.tuples(st.integers(1, 8), st.integers(0, 2000), st.floats(0, 1000, allow_nan=False)),
        max_size=40,
    )
)
def test_any_samples(readings):
    """Whatever the samples: progress never falls and stays 0-99, at most one schedule item
    and one ramp step run per sample, and nothing follows an abort."""
    state, _ = begin(Policy(stalling=MINIMAL_DOWNTIME.stalling, ramp=((5.0, 100), (9.0, 200))))
    last = 0
    aborted = False
    for iteration, remaining, elapsed in readings:
        state, actions = observe(state, Sample(iteration, 2000, remaining, elapsed))
        assert last <= state.progress <= 99
        last = state.progress
        assert not (aborted and actions)
        assert len(actions) <= 2
        aborted = aborted or state.aborted
