"""Pure: how an outgoing migration is steered to converge, given its progress samples.

A migration converges when the memory the guest dirties per pass shrinks until the rest fits
in the allowed downtime. :func:`plan` turns the params into a :class:`Policy`; :func:`begin`
gives the actions to take at the start; :func:`observe` takes one progress sample (memory pass,
bytes remaining, time elapsed) and answers what to do now: set the downtime to N ms, abort, or
nothing. The shell (:mod:`.migration_source`) applies the actions; nothing here reads a clock.

**Convergence schedule** (VDSM's ``convergenceSchedule``): the ``init`` actions run at the
start. A *stall* is a new memory pass that starts with no less data left than the best pass
start seen before (the first pass never counts): the guest dirtied memory as fast as it was
sent. At each stall the head ``stalling`` item runs if the stalls so far exceed its ``limit``
(-1: at the next stall), one item per stall. ``postcopy`` actions are passed on; the source
logs them as unsupported and goes on with the next item.

**Without a schedule** (VDSM's legacy downtime thread, our arithmetic): the downtime rises to
``settings.downtime`` in ``downtime_steps`` equal steps, step *i* after *i/steps* of
``downtime_delay`` seconds per GiB of guest RAM (at least one GiB's worth).

**Always**: abort after ``progress_timeout`` seconds in which the data left never reached a new
low, and after ``max_time_per_gib`` seconds per GiB of RAM in all (0 turns either off).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .migration import (
    ConvergenceSchedule,
    JobStats,
    MigrationSettings,
    StallingItem,
    progress_percent,
)

GIB = 1024 * 1024  # KiB


@dataclass(frozen=True)
class SetDowntime:
    """Allow the final switch-over to pause the guest for up to ``ms`` milliseconds."""

    ms: int


@dataclass(frozen=True)
class Abort:
    """Abort the migration; the VM stays on the source. ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class StartPostCopy:
    """The schedule asks to switch to post-copy (not supported by this agent)."""


Action = SetDowntime | Abort | StartPostCopy


@dataclass(frozen=True)
class Policy:
    """
    How one migration is steered.

    :ivar init: actions at the start.
    :ivar stalling: the schedule's stalling items, in order.
    :ivar ramp: ``(seconds elapsed, downtime ms)`` steps when there is no schedule.
    :ivar progress_timeout: seconds without a new low of the data left before aborting (0: off).
    :ivar max_time: seconds in all before aborting (0: off).
    """

    init: tuple[Action, ...] = ()
    stalling: tuple[StallingItem, ...] = ()
    ramp: tuple[tuple[float, int], ...] = ()
    progress_timeout: float = 0.0
    max_time: float = 0.0


def plan(
    schedule: ConvergenceSchedule | None, settings: MigrationSettings, memory_kib: int
) -> Policy:
    """The :class:`Policy` for a migration of a guest with ``memory_kib`` of RAM."""
    gib = max(memory_kib / GIB, 1.0)
    progress_timeout = max(settings.progress_timeout, 0.0)
    max_time = max(settings.max_time_per_gib, 0.0) * gib
    if schedule is not None:
        return Policy(
            init=tuple(_action(a.name, a.value) for a in schedule.init),
            stalling=schedule.stalling,
            progress_timeout=progress_timeout,
            max_time=max_time,
        )
    steps = max(settings.downtime_steps, 1)
    total = settings.downtime_delay * gib
    ramp = tuple(
        (total * i / steps, max(1, settings.downtime * i // steps)) for i in range(1, steps + 1)
    )
    return Policy(
        ramp=ramp if settings.downtime > 0 else (),
        progress_timeout=progress_timeout,
        max_time=max_time,
    )


def _action(name: str, value: int | None) -> Action:
    if name == "setDowntime":
        assert value is not None
        return SetDowntime(value)
    if name == "postcopy":
        return StartPostCopy()
    return Abort("the convergence schedule aborted the migration")


@dataclass(frozen=True)
class Sample:
    """
    One progress reading.

    :ivar iteration: the memory pass, from 1.
    :ivar elapsed: seconds since the migration started.
    """

    iteration: int
    data_total: int
    data_remaining: int
    elapsed: float

    @classmethod
    def of(cls, stats: JobStats) -> Sample:
        """A sample from the hypervisor's job statistics."""
        return cls(stats.iteration, stats.data_total, stats.data_remaining, stats.elapsed_ms / 1000)


@dataclass(frozen=True)
class Convergence:
    """
    Where the steering of one migration is.

    :ivar stalls: stalled passes so far.
    :ivar pass_low: the least data left seen at the start of a pass.
    :ivar low: the least data left seen at all, and ``low_at`` when (s).
    :ivar downtime: the downtime last set (ms), if any.
    :ivar aborted: an abort was decided; nothing more is.
    """

    policy: Policy
    stalling: tuple[StallingItem, ...]
    ramp: tuple[tuple[float, int], ...]
    iteration: int = 0
    stalls: int = 0
    pass_low: int | None = None
    low: int | None = None
    low_at: float = 0.0
    progress: int = 0
    downtime: int | None = None
    aborted: bool = False


def begin(policy: Policy) -> tuple[Convergence, list[Action]]:
    """:returns: the starting state and the actions to take before the first sample."""
    state = Convergence(policy, policy.stalling, policy.ramp)
    return _apply(state, list(policy.init))


def observe(state: Convergence, sample: Sample) -> tuple[Convergence, list[Action]]:
    """
    Take one sample.

    :returns: the new state and the actions to take now, in order (often none).
    """
    if state.aborted:
        return state, []
    state = replace(state, progress=max(state.progress, _percent(sample)))
    if state.low is None or sample.data_remaining < state.low:
        state = replace(state, low=sample.data_remaining, low_at=sample.elapsed)
    actions: list[Action] = []
    if sample.iteration > state.iteration:
        state, actions = _new_pass(state, sample)
    state, ramp = _ramp(state, sample.elapsed)
    actions += ramp
    actions += _limits(state, sample.elapsed)
    return _apply(state, actions)


def _percent(sample: Sample) -> int:
    stats = JobStats(sample.iteration, sample.data_total, 0, sample.data_remaining, 0)
    return progress_percent(stats)


def _new_pass(state: Convergence, sample: Sample) -> tuple[Convergence, list[Action]]:
    first = state.iteration == 0 or sample.iteration <= 1
    stalled = not first and state.pass_low is not None and sample.data_remaining >= state.pass_low
    pass_low = sample.data_remaining
    if state.pass_low is not None:
        pass_low = min(state.pass_low, pass_low)
    state = replace(state, iteration=sample.iteration, pass_low=pass_low)
    if not stalled:
        return state, []
    state = replace(state, stalls=state.stalls + 1)
    if state.stalling and state.stalling[0].limit < state.stalls:
        head, rest = state.stalling[0], state.stalling[1:]
        return replace(state, stalling=rest), [_action(head.action.name, head.action.value)]
    return state, []


def _ramp(state: Convergence, elapsed: float) -> tuple[Convergence, list[Action]]:
    due = [step for step in state.ramp if step[0] <= elapsed]
    if not due:
        return state, []
    rest = state.ramp[len(due) :]
    return replace(state, ramp=rest), [SetDowntime(due[-1][1])]


def _limits(state: Convergence, elapsed: float) -> list[Action]:
    policy = state.policy
    if policy.max_time and elapsed > policy.max_time:
        return [Abort(f"the migration took longer than {policy.max_time:g} s")]
    if policy.progress_timeout and elapsed - state.low_at > policy.progress_timeout:
        return [Abort(f"no progress for {policy.progress_timeout:g} s")]
    return []


def _apply(state: Convergence, actions: list[Action]) -> tuple[Convergence, list[Action]]:
    """Record what the actions do to the state; nothing after an abort is kept."""
    kept: list[Action] = []
    for action in actions:
        kept.append(action)
        if isinstance(action, SetDowntime):
            state = replace(state, downtime=action.ms)
        elif isinstance(action, Abort):
            state = replace(state, aborted=True)
            break
    return state, kept
