"""Pure: placing a VM with the real scheduler, under the cluster manager's per-host limits.

HA restarts, maintenance evacuation and move-back all choose hosts with
:func:`engine.decide.scheduler.place` (the same filters, weights and pending ledger as any
start), over the manager's view of the hosts. On top of the scheduler, the manager limits how
many starts and incoming migrations a host takes at once; a host at its limit is left out of the
decision and its explanation says so, like any filter's refusal. When the only hosts that could
take the VM are at their limits, the placement is a *wait for a slot*, not a refusal: the caller
tries again on the next tick without counting an attempt.

The one-line texts below go into event messages; the decision itself (with every host's story)
travels in the command and the event's details.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from .clusterstate import ClusterState
from .model import VmRequest
from .scheduler import Decision, place, schedule

#: Operation kinds and the setting that limits each per destination host.
_LIMITS = {"start": "max_starts_per_host", "migrate": "max_migrations_in"}


@dataclass(frozen=True, slots=True)
class Placement:
    """
    :ivar decision: the scheduler's decision (hosts at their limits explained as refused).
    :ivar slot_wait: no host was chosen only because the hosts that fit are at their limits.
    """

    decision: Decision
    slot_wait: bool = False


def limited_hosts(state: ClusterState, kind: str) -> dict[str, str]:
    """:returns: host id → why it takes no more operations of ``kind`` right now."""
    limit = getattr(state.settings, _LIMITS[kind])
    out: dict[str, str] = {}
    for host in state.sorted_hosts():
        busy = state.in_flight(host.id, kind)
        if busy >= limit:
            why = f"{busy} {kind}(s) in flight to it (limit {limit})"
            out[host.id] = f"refused by {kind} limit: {why}"
    return out


def place_vm(
    state: ClusterState,
    request: VmRequest,
    now: float,
    *,
    kind: str,
    only: Collection[str] | None = None,
    limits: bool = True,
) -> Placement:
    """
    Choose a host for ``request`` and reserve its resources there (the pending ledger).

    :param kind: ``"start"`` or ``"migrate"``, for the per-host limit.
    :param only: consider only these host ids (move-back to one host), else every host.
    :param limits: apply the per-host limits (the manager's own bursts); an admin's request is
        carried out at once, its host's agent pacing it, and only counts towards them.
    :returns: the placement.
    """
    views = [v for v in state.host_views(now) if only is None or v.id in only]
    if not limits:
        return Placement(place(request, views, state.policy, state.pending, units=state.units))
    limited = {h: why for h, why in limited_hosts(state, kind).items() if h != request.current_host}
    open_ = [v for v in views if v.id not in limited]
    decision = place(request, open_, state.policy, state.pending, units=state.units)
    full = [v for v in views if v.id in limited]
    if not full:
        return Placement(decision)
    explanations = dict(decision.explanations)
    names = dict(decision.host_names)
    for view in full:
        explanations[view.id] = [limited[view.id]]
        names[view.id] = view.name
    decision = replace(decision, explanations=explanations, host_names=names)
    waiting = False
    if decision.host is None:
        fits = schedule(request, full, state.policy, state.pending, units=state.units)
        waiting = fits.host is not None
    return Placement(decision, waiting)


def refusal_text(decision: Decision) -> str:
    """:returns: why no host was chosen, host by host, on one line."""
    refused = _refused(decision)
    if not refused:
        return "there are no hosts"
    names = decision.host_names
    parts = [f"{names.get(h, h)}: {', '.join(decision.explanations[h])}" for h in refused]
    return "no host can take it (" + "; ".join(parts) + ")"


def choice_text(decision: Decision) -> str:
    """
    :returns: which host was chosen, among how many, and which filters refused the others, on
        one line (each host's whole story is in the decision).
    """
    total = len(decision.explanations)
    refused = [
        f"{decision.host_names.get(h, h)} by {', '.join(_filters(decision.explanations[h]))}"
        for h in _refused(decision)
    ]
    others = f"; refused: {'; '.join(refused)}" if refused else ""
    return (
        f"host {decision.host_name} chosen by the scheduler "
        f"({len(decision.ranking)} of {total} hosts passed the filters{others})"
    )


def _refused(decision: Decision) -> list[str]:
    return sorted(
        (h for h in decision.explanations if h not in decision.scores),
        key=lambda h: (decision.host_names.get(h, h), h),
    )


def _filters(explanation: list[str]) -> list[str]:
    prefix = "refused by "
    return [e[len(prefix) :].split(":")[0] for e in explanation if e.startswith(prefix)]
