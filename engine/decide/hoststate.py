"""Pure: the host state machine (oVirt's ``VDSStatus`` life cycle, with a faster grace period).

The engine's host monitor feeds this module the facts its link to an agent reports (connected,
link lost, heartbeat missed or answered, a connect attempt failed), the commands an admin gives
(maintenance, activate, remove), the maintenance logic's findings (VMs evacuated) and fencing's
(power confirmed off), plus a ``tick`` when time passes. Each call returns a `Transition` with a
reason for the audit log. Nothing here reads a clock: the caller passes ``now`` (seconds, any
epoch, e.g. the reactor's ``seconds()`` or the simulator's virtual time).

How a host stops being Up (``reference/engine-peers.md`` §2.1, oVirt's ``VdsManager``):

- the link is lost: Up goes to **Connecting** at once; a heartbeat that is not answered counts
  as a miss, and ``misses_to_suspect`` misses in a row do the same;
- from the first sign of trouble the host has ``grace_period`` seconds to answer again (back to
  Up) before it is declared **NonResponsive** (which lets HA and fencing act);
- a host in PreparingForMaintenance keeps that state during the grace period, then also becomes
  NonResponsive: a host that died mid-evacuation still holds VMs that need HA;
- a host that never connects within ``install_timeout`` of being added becomes NonResponsive.

oVirt takes 90-120 s (a 30 s heartbeat plus a 60 s+ grace); the defaults here declare a host
NonResponsive about 19 s after its agent stops answering (first miss after 2 s + 2 s, grace 15 s).

Two kinds of input, two rules:

- *facts* (``connected``, ``connect_failed``, ``link_lost``, ``heartbeat_missed``,
  ``heartbeat_ok``, ``fenced``, ``tick``) never raise: in a state where they change nothing they
  return a no-op `Transition` (its ``changed`` is false) that still records them;
- *commands and findings* (``maintenance_requested``, ``activate_requested``, ``removed``,
  ``vms_evacuated``) raise `InvalidTransition` where they make no sense (activating a
  NonResponsive host, removing an Up one); a command that asks for the state the host is already
  heading to (maintenance twice) is an idempotent no-op.

``Removed`` is terminal: every input raises there. ``added`` only creates a host (`added`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum


class HostState(StrEnum):
    """The engine's host states, with oVirt's names (they compare equal to plain strings)."""

    INSTALLING = "Installing"
    CONNECTING = "Connecting"
    UP = "Up"
    NON_RESPONSIVE = "NonResponsive"
    PREPARING_FOR_MAINTENANCE = "PreparingForMaintenance"
    MAINTENANCE = "Maintenance"
    DOWN = "Down"
    REMOVED = "Removed"


class HostEvent(StrEnum):
    """What can happen to a host; the link's event kinds use the same strings."""

    ADDED = "added"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    LINK_LOST = "link_lost"
    HEARTBEAT_MISSED = "heartbeat_missed"
    HEARTBEAT_OK = "heartbeat_ok"
    TICK = "tick"
    MAINTENANCE_REQUESTED = "maintenance_requested"
    VMS_EVACUATED = "vms_evacuated"
    ACTIVATE_REQUESTED = "activate_requested"
    FENCED = "fenced"
    REMOVED = "removed"


#: States in which a silent agent is watched: trouble starts the grace period.
WATCHED = frozenset({HostState.UP, HostState.CONNECTING, HostState.PREPARING_FOR_MAINTENANCE})


class InvalidTransition(Exception):
    """
    An input that makes no sense in the host's current state.

    :ivar state: the host's state.
    :ivar event: the refused input.
    :ivar reason: why, in words fit for an API error or the audit log.
    """

    def __init__(self, state: HostState, event: HostEvent, reason: str) -> None:
        super().__init__(f"{event} refused in state {state}: {reason}")
        self.state = state
        self.event = event
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HostTiming:
    """
    The liveness budget of a host, in seconds (the link uses the heartbeat figures).

    :ivar heartbeat_interval: how often the link sends ``Host.ping2``.
    :ivar heartbeat_timeout: how long one heartbeat may wait for its answer before it is missed.
    :ivar misses_to_suspect: missed heartbeats in a row that take an Up host to Connecting.
    :ivar grace_period: seconds from the first trouble (a lost link or a miss) until the host
        is declared NonResponsive unless it answers again.
    :ivar install_timeout: seconds a newly added host may take to connect before it is
        declared NonResponsive.
    """

    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 2.0
    misses_to_suspect: int = 2
    grace_period: float = 15.0
    install_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "heartbeat_timeout", "grace_period", "install_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.misses_to_suspect < 1:
            raise ValueError(f"misses_to_suspect must be at least 1, got {self.misses_to_suspect}")


DEFAULT_TIMING = HostTiming()


@dataclass(frozen=True, slots=True)
class HostStatus:
    """
    What the engine knows about one host's liveness.

    :ivar state: the host's state.
    :ivar since: when the host entered ``state``.
    :ivar link_up: whether the link to its agent is connected.
    :ivar missed: heartbeats missed in a row.
    :ivar trouble_since: when the current trouble (lost link, first miss) began; None if none.
    """

    state: HostState
    since: float
    link_up: bool = False
    missed: int = 0
    trouble_since: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """
    The outcome of one input: the status before and after, and why.

    :ivar before: the status before (None for `added`).
    :ivar after: the status after.
    :ivar event: the input.
    :ivar at: when it happened.
    :ivar reason: a sentence for the audit log.
    """

    before: HostStatus | None
    after: HostStatus
    event: HostEvent
    at: float
    reason: str = field(default="")

    @property
    def changed(self) -> bool:
        """Whether the host's state changed (facts that only update counters do not)."""
        return self.before is None or self.before.state != self.after.state


def added(now: float, *, detail: str = "") -> Transition:
    """
    A host was added: it is Installing until its agent first connects.

    :param now: the current time.
    :param detail: words to append to the reason (e.g. the address).
    :returns: the transition into Installing.
    """
    status = HostStatus(HostState.INSTALLING, since=now)
    return Transition(None, status, HostEvent.ADDED, now, _join("host added", detail))


def resume(state: HostState, now: float) -> HostStatus:
    """
    Rebuild a status from a stored state after an engine restart.

    The link is not connected yet, so a watched host starts its grace period now: if its agent
    does not connect within it, the host becomes NonResponsive.

    :param state: the state read from the store.
    :param now: the current time.
    :returns: the status to feed further events to.
    """
    trouble = now if state in WATCHED else None
    return HostStatus(HostState(state), since=now, trouble_since=trouble)


def deadline(status: HostStatus, timing: HostTiming = DEFAULT_TIMING) -> float | None:
    """
    When a ``tick`` would next change the host's state if nothing else happens.

    :returns: a time, or None when time alone changes nothing.
    """
    if status.state is HostState.INSTALLING:
        return status.since + timing.install_timeout
    if status.state in WATCHED and status.trouble_since is not None:
        return status.trouble_since + timing.grace_period
    return None


def step(
    status: HostStatus,
    event: HostEvent,
    now: float,
    *,
    timing: HostTiming = DEFAULT_TIMING,
    detail: str = "",
) -> Transition:
    """
    Apply one input to a host's status.

    :param status: the current status.
    :param event: the input.
    :param now: the current time (never earlier than inputs already applied).
    :param timing: the liveness budget.
    :param detail: what the reporter said (a link's close reason, an admin's comment): it is
        appended to the reason.
    :returns: the transition, possibly a no-op (``changed`` false).
    :raises InvalidTransition: for a command that makes no sense in this state, ``added`` for
        an existing host, and anything for a removed host.
    """
    event = HostEvent(event)
    if status.state is HostState.REMOVED:
        raise InvalidTransition(status.state, event, "the host was removed")
    if event is HostEvent.ADDED:
        raise InvalidTransition(status.state, event, "the host already exists")
    after, reason = _RULES[event](status, now, timing)
    if after.state is not status.state:
        after = replace(after, since=now)
    return Transition(status, after, event, now, _join(reason, detail))


Rule = Callable[[HostStatus, float, HostTiming], tuple[HostStatus, str]]


def _join(reason: str, detail: str) -> str:
    return f"{reason} ({detail})" if detail else reason


def _to(status: HostStatus, state: HostState, **facts: object) -> HostStatus:
    return replace(status, state=state, **facts)  # type: ignore[arg-type]


def _trouble(status: HostStatus, now: float) -> float | None:
    """When trouble began, counting from ``now`` if it begins now (watched states only)."""
    if status.state in WATCHED or status.state is HostState.NON_RESPONSIVE:
        return status.trouble_since if status.trouble_since is not None else now
    return None


def _expire(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    """Apply the deadline of `deadline`, if it has passed; :returns: the status and why."""
    due = deadline(status, timing)
    if due is None or now < due:
        return status, ""
    if status.state is HostState.INSTALLING:
        return (
            _to(status, HostState.NON_RESPONSIVE, trouble_since=status.since),
            f"agent did not connect within {timing.install_timeout:g} s of being added",
        )
    assert status.trouble_since is not None
    abandoned = status.state is HostState.PREPARING_FOR_MAINTENANCE
    return (
        _to(status, HostState.NON_RESPONSIVE),
        f"no answer for {now - status.trouble_since:.1f} s (grace period "
        f"{timing.grace_period:g} s){', maintenance abandoned' if abandoned else ''}",
    )


def _fact(
    status: HostStatus, reason: str, now: float, timing: HostTiming
) -> tuple[HostStatus, str]:
    """A fact that changes no state by itself, unless a deadline has passed meanwhile."""
    late, why = _expire(status, now, timing)
    return (late, f"{reason}; {why}") if why else (status, reason)


def _back_after(status: HostStatus, now: float, what: str) -> str:
    if status.trouble_since is None:
        return what
    return f"{what} after {now - status.trouble_since:.1f} s of trouble"


def _connected(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    healthy = replace(status, link_up=True, missed=0, trouble_since=None)
    reason = _back_after(status, now, "agent connected") + "; capabilities read"
    if status.state in (
        HostState.INSTALLING,
        HostState.CONNECTING,
        HostState.NON_RESPONSIVE,
        HostState.DOWN,
    ):
        return _to(healthy, HostState.UP), reason
    return healthy, reason


def _link_down(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    down = replace(status, link_up=False, missed=0, trouble_since=_trouble(status, now))
    if status.state is HostState.UP:
        grace = f"grace period {timing.grace_period:g} s"
        return _fact(
            _to(down, HostState.CONNECTING), f"link to the agent lost; {grace}", now, timing
        )
    return _fact(down, "link to the agent down", now, timing)


def _missed(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    missed = replace(status, missed=status.missed + 1, trouble_since=_trouble(status, now))
    count = f"{missed.missed} heartbeat(s) missed in a row"
    if status.state is HostState.UP and missed.missed >= timing.misses_to_suspect:
        suspect = _to(missed, HostState.CONNECTING)
        return _fact(suspect, f"{count}; grace period {timing.grace_period:g} s", now, timing)
    return _fact(missed, count, now, timing)


def _answered(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    healthy = replace(status, link_up=True, missed=0, trouble_since=None)
    reason = _back_after(status, now, "heartbeat answered")
    if status.state in (HostState.CONNECTING, HostState.NON_RESPONSIVE):
        return _to(healthy, HostState.UP), reason
    return healthy, reason


def _tick(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    late, why = _expire(status, now, timing)
    return late, why or "time passed"


def _maintenance(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    state = status.state
    if state is HostState.UP:
        return _to(status, HostState.PREPARING_FOR_MAINTENANCE), "maintenance requested"
    if state in (HostState.PREPARING_FOR_MAINTENANCE, HostState.MAINTENANCE):
        return status, f"maintenance requested again; already {state}"
    quiet = _to(status, HostState.MAINTENANCE, missed=0, trouble_since=None)
    return quiet, f"maintenance requested on a host that is {state}: no VMs to evacuate"


def _evacuated(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    if status.state is not HostState.PREPARING_FOR_MAINTENANCE:
        raise InvalidTransition(status.state, HostEvent.VMS_EVACUATED, "not preparing for it")
    quiet = _to(status, HostState.MAINTENANCE, missed=0, trouble_since=None)
    return quiet, "all VMs evacuated"


def _activate(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    state = status.state
    if state is HostState.NON_RESPONSIVE:
        raise InvalidTransition(
            state, HostEvent.ACTIVATE_REQUESTED, "it becomes Up by itself when its agent answers"
        )
    if state in (HostState.UP, HostState.CONNECTING, HostState.INSTALLING):
        return status, f"activation requested; already {state}"
    if status.link_up and status.missed < timing.misses_to_suspect:
        return _to(status, HostState.UP), "activated"
    trouble = status.trouble_since if status.trouble_since is not None else now
    waiting = _to(status, HostState.CONNECTING, trouble_since=trouble)
    return waiting, f"activated; waiting for its agent (grace period {timing.grace_period:g} s)"


def _fenced(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    if status.state is HostState.DOWN:
        return status, "power confirmed off again"
    off = _to(status, HostState.DOWN, link_up=False, missed=0, trouble_since=None)
    return off, "power confirmed off"


_REMOVABLE = frozenset({HostState.INSTALLING, HostState.MAINTENANCE, HostState.DOWN})


def _removed(status: HostStatus, now: float, timing: HostTiming) -> tuple[HostStatus, str]:
    if status.state not in _REMOVABLE:
        raise InvalidTransition(
            status.state, HostEvent.REMOVED, "put the host in Maintenance first"
        )
    return _to(status, HostState.REMOVED, link_up=False, trouble_since=None), "host removed"


_RULES: dict[HostEvent, Rule] = {
    HostEvent.CONNECTED: _connected,
    HostEvent.CONNECT_FAILED: _link_down,
    HostEvent.LINK_LOST: _link_down,
    HostEvent.HEARTBEAT_MISSED: _missed,
    HostEvent.HEARTBEAT_OK: _answered,
    HostEvent.TICK: _tick,
    HostEvent.MAINTENANCE_REQUESTED: _maintenance,
    HostEvent.VMS_EVACUATED: _evacuated,
    HostEvent.ACTIVATE_REQUESTED: _activate,
    HostEvent.FENCED: _fenced,
    HostEvent.REMOVED: _removed,
}
