"""MOM's controllers as pure decisions: the controls a policy set become agent calls.

After a successful policy evaluation, each enabled controller looks at the host and guest
entities and returns the :class:`Action`\\ s to carry out, as MOM's controllers do:

- ``Balloon``: every guest with a ``balloon_target`` control, every cycle (no change check);
- ``KSM``: the host's ``ksm_*`` controls that differ from the current ``ksm_*`` statistics;
- ``CpuTune``: guests whose ``vcpu_quota``/``vcpu_period`` controls differ from their stats;
- ``IoTune``: guests whose ``io_tune`` objects the policy changed against ``io_tune_current``.

Values are ``int()``-ed like MOM does. Nothing here performs I/O: the policy thread applies the
actions through :class:`mom.interfaces.IMomAgent`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: KSM controls and the sysfs key each one sets.
KSM_CONTROLS = {
    "ksm_run": "run",
    "ksm_pages_to_scan": "pages_to_scan",
    "ksm_sleep_millisecs": "sleep_millisecs",
    "ksm_merge_across_nodes": "merge_across_nodes",
}


@dataclass(frozen=True)
class Action:
    """
    One call to make on the agent.

    :ivar kind: ``balloon``, ``ksm``, ``cpu_tune`` or ``io_tune``.
    :ivar vm_id: the guest, or ``None`` for the host (KSM).
    :ivar value: the target KiB, ``{"run": 1, ...}``, ``(quota, period)`` or the tunables list.
    """

    kind: str
    vm_id: str | None
    value: Any


def _controls(entity: Any) -> dict[str, Any]:
    return getattr(entity, "controls", None) or {}


def _uuid(entity: Any) -> str:
    return entity.properties["uuid"]


def _stat(entity: Any, name: str) -> Any:
    return getattr(entity, name, None)


def balloon(host: Any, guests: Iterable[Any]) -> list[Action]:
    """Balloon: set each guest's target whenever the policy set one."""
    return [
        Action("balloon", _uuid(g), int(_controls(g)["balloon_target"]))
        for g in guests
        if _controls(g).get("balloon_target") is not None
    ]


def ksm(host: Any, guests: Iterable[Any]) -> list[Action]:
    """KSM: only the settings that differ from what the host reports."""
    controls = _controls(host)
    changed = {}
    for control, key in KSM_CONTROLS.items():
        if controls.get(control) is None:
            continue
        value = int(controls[control])
        current = _stat(host, control)
        if current is None or int(current) != value:
            changed[key] = value
    return [Action("ksm", None, changed)] if changed else []


def cpu_tune(host: Any, guests: Iterable[Any]) -> list[Action]:
    """CpuTune: quota and period for guests whose controls differ from their current ones."""
    actions = []
    for guest in guests:
        controls = _controls(guest)
        quota, period = controls.get("vcpu_quota"), controls.get("vcpu_period")
        if quota is None or period is None:
            continue
        wanted = (int(quota), int(period))
        if wanted != (_stat(guest, "vcpu_quota"), _stat(guest, "vcpu_period")):
            actions.append(Action("cpu_tune", _uuid(guest), wanted))
    return actions


def io_tune(host: Any, guests: Iterable[Any]) -> list[Action]:
    """IoTune: the disks whose limits the policy changed, per guest."""
    actions = []
    for guest in guests:
        tunes = _stat(guest, "io_tune") or []
        before = {c["name"]: c["ioTune"] for c in _stat(guest, "io_tune_current") or []}
        changed = [t.state() for t in tunes if t.state()["ioTune"] != before.get(t.name)]
        if changed:
            actions.append(Action("io_tune", _uuid(guest), changed))
    return actions


Controller = Callable[[Any, Sequence[Any]], list[Action]]
#: MOM's controller names (the ``controllers`` config key) and their decisions.
CONTROLLERS: dict[str, Controller] = {
    "Balloon": balloon,
    "KSM": ksm,
    "CpuTune": cpu_tune,
    "IoTune": io_tune,
}


def controller(name: str) -> Controller:
    """:raises ValueError: for a name MOM does not have."""
    try:
        return CONTROLLERS[name]
    except KeyError:
        known = ", ".join(CONTROLLERS)
        raise ValueError(f"unknown MOM controller {name!r}; known: {known}") from None
