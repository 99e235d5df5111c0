"""Pure: what a fence action did, and the proof of it (:class:`FenceResult`), built from what
was observed.

The rule every builder keeps: an outcome is ``done`` only when the observation proves it
(``off``: no process of the host is left; ``on``: its processes run and its agent announced
itself; ``restart``: a different agent instance answers). Otherwise ``failed`` (it did not
happen, or could not be tried) or ``unknown`` (it may have happened; nobody can tell). The
power state is what was observed last, ``unknown`` when nothing could be observed; it is never
assumed from what was asked.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .procs import Proc, describe


class FenceAction(enum.StrEnum):
    """What a fence agent can be asked to do (each agent supports some)."""

    STATUS = "status"
    OFF = "off"
    ON = "on"
    REBOOT = "reboot"
    RESTART = "restart"


class Outcome(enum.StrEnum):
    """Whether the action happened, as far as the proof goes."""

    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Power(enum.StrEnum):
    """The host's power as observed (never as assumed)."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FenceResult:
    """
    The outcome of one fence action on one host.

    :ivar action: the action asked (a :class:`FenceAction` value).
    :ivar outcome: ``done`` only with proof; else ``failed`` or ``unknown``.
    :ivar power: the power state observed at the end.
    :ivar proof: what was observed, in words, e.g. "cgroup /sys/fs/cgroup/unified/vl/h1 has no
        processes left (was 3: testhost 120, libvirtd 123, qemu-system-x86 456)".
    :ivar message: one sentence for the admin.
    :ivar agent: the fence agent that acted (``soft``, ``power``).
    :ivar steps: for an action made of steps (``reboot``: off, then on), each step's result.
    """

    action: str
    outcome: Outcome
    power: Power
    proof: str
    message: str
    agent: str = ""
    steps: tuple[FenceResult, ...] = field(default=())

    @property
    def done(self) -> bool:
        """True when the action is proven to have happened."""
        return self.outcome is Outcome.DONE

    def by(self, agent: str) -> FenceResult:
        """:returns: this result, attributed to ``agent``."""
        steps = tuple(step.by(agent) for step in self.steps)
        return FenceResult(self.action, self.outcome, self.power, self.proof, self.message,
                           agent, steps)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """:returns: the result as JSON values (the admin API's ``FenceResult``)."""
        return {
            "action": self.action,
            "outcome": str(self.outcome),
            "power": str(self.power),
            "proof": self.proof,
            "message": self.message,
            "agent": self.agent,
            "steps": [step.as_dict() for step in self.steps],
        }


def unknown(action: str, why: str, *, proof: str = "") -> FenceResult:
    """Nothing could be observed: outcome and power unknown."""
    return FenceResult(action, Outcome.UNKNOWN, Power.UNKNOWN, proof or why, why)


def failed(action: str, why: str, *, power: Power = Power.UNKNOWN, proof: str = "") -> FenceResult:
    """The action did not happen (or could not be tried), for the reason ``why``."""
    return FenceResult(action, Outcome.FAILED, power, proof or why, why)


# -- power, from the processes of a host -------------------------------------------------------


def status_result(where: str, members: Sequence[Proc]) -> FenceResult:
    """
    The power status of a host whose processes are ``members`` of ``where``.

    :param where: names the process set, e.g. "cgroup /sys/fs/cgroup/unified/vl/h1".
    """
    if members:
        return FenceResult(
            FenceAction.STATUS, Outcome.DONE, Power.ON,
            f"{where} has {len(members)} processes: {describe(members)}",
            f"on: {len(members)} processes run",
        )  # fmt: skip
    return FenceResult(
        FenceAction.STATUS, Outcome.DONE, Power.OFF, f"{where} has no processes", "off"
    )


def already_off(action: str, where: str) -> FenceResult:
    """An ``off`` (or the first step of a reboot) on a host with no process left."""
    return FenceResult(action, Outcome.DONE, Power.OFF, f"{where} has no processes",
                       "already off: nothing to kill")  # fmt: skip


def off_result(
    where: str,
    killed: Sequence[Proc],
    remaining: Sequence[Proc],
    *,
    waited: float,
    timeout: float,
) -> FenceResult:
    """
    The outcome of killing a host's processes.

    :param killed: the processes there when the kill was sent.
    :param remaining: the processes of ``where`` still alive at the end (any, not only killed
        ones: a process that appeared meanwhile is as much a sign of life).
    :param waited: seconds from the kill to the last observation.
    :param timeout: the most it was allowed to wait.
    """
    was = f"was {len(killed)}: {describe(killed)}"
    if not remaining:
        return FenceResult(
            FenceAction.OFF, Outcome.DONE, Power.OFF,
            f"{where} has no processes left ({was}); {waited:.1f} s after the kill",
            f"off: {len(killed)} processes killed",
        )  # fmt: skip
    return FenceResult(
        FenceAction.OFF, Outcome.FAILED, Power.ON,
        f"{where} still has {len(remaining)} processes {timeout:g} s after the kill: "
        f"{describe(remaining)} ({was})",
        f"not off: {len(remaining)} processes survived the kill",
    )  # fmt: skip


def on_result(
    where: str,
    members: Sequence[Proc],
    *,
    url: str | None,
    url_file: str | None,
    exited: int | None,
    waited: float,
    timeout: float,
) -> FenceResult:
    """
    The outcome of running a host's start command.

    :param members: the host's processes at the last observation.
    :param url: what the agent's URL file said (None: no such file yet).
    :param url_file: the file watched (None: nothing to wait for but processes).
    :param exited: the start command's exit status if it has ended, else None.
    :param waited: seconds since the start command was run.
    """
    running = f"{where} has {len(members)} processes: {describe(members)}"
    if members and (url_file is None or url):
        agent = f"; the agent's URL file {url_file} says {url}" if url_file else ""
        return FenceResult(FenceAction.ON, Outcome.DONE, Power.ON, running + agent,
                           f"on after {waited:.1f} s")  # fmt: skip
    ended = "" if exited is None else f"; the start command exited with status {exited}"
    if members:
        return FenceResult(
            FenceAction.ON, Outcome.FAILED, Power.ON,
            f"{running}, but {url_file} was not written within {timeout:g} s{ended}",
            "processes started but the agent did not announce itself in time",
        )  # fmt: skip
    return FenceResult(
        FenceAction.ON, Outcome.FAILED, Power.OFF,
        f"{where} has no processes {waited:.1f} s after the start command{ended}",
        "the host did not start" + (f" (start command status {exited})" if ended else ""),
    )  # fmt: skip


def already_on(where: str, members: Sequence[Proc]) -> FenceResult:
    """An ``on`` for a host whose processes already run: nothing is started twice."""
    return FenceResult(
        FenceAction.ON, Outcome.DONE, Power.ON,
        f"{where} already has {len(members)} processes: {describe(members)}",
        "already on: not started again",
    )  # fmt: skip


def reboot_result(off: FenceResult, on: FenceResult | None) -> FenceResult:
    """
    A reboot from its steps: done when both are; it stops after an ``off`` without proof.

    :param on: None when the ``off`` step was not done (then nothing was started).
    """
    steps = (off,) if on is None else (off, on)
    last = steps[-1]
    if on is None:
        message = f"reboot stopped: the power-off was not proven ({off.message})"
        return FenceResult(FenceAction.REBOOT, off.outcome, off.power, off.proof, message,
                           off.agent, steps)  # fmt: skip
    proof = f"off: {off.proof}; on: {on.proof}"
    message = "rebooted" if on.done else f"powered off, but not on again: {on.message}"
    return FenceResult(FenceAction.REBOOT, last.outcome, last.power, proof, message,
                       last.agent, steps)  # fmt: skip


# -- the soft agent: a new agent instance ------------------------------------------------------


@dataclass(frozen=True)
class AgentInstance:
    """Which agent process answers a link: its instance id and when it started (epoch s)."""

    instance: str
    started: float | None = None

    @classmethod
    def of(cls, caps: Any) -> AgentInstance | None:
        """:returns: the instance named by an agent's capabilities, or None if they name none."""
        if not isinstance(caps, dict) or not caps.get("agentInstance"):
            return None
        started = caps.get("agentStarted")
        when = started if isinstance(started, int | float) else None
        return cls(str(caps["agentInstance"]), when)

    def __str__(self) -> str:
        when = "" if self.started is None else f" (started at {self.started:.3f})"
        return f"agent instance {self.instance}{when}"


def restart_result(
    before: AgentInstance,
    after: AgentInstance | None,
    *,
    waited: float,
    timeout: float,
    asked: str,
) -> FenceResult:
    """
    The outcome of asking an agent to restart.

    :param before: the instance that was asked.
    :param after: the instance answering at the last observation (None: the link is down).
    :param asked: how the request went, e.g. "Host.restart answered" or why it got no answer.
    """
    if after is not None and after.instance != before.instance:
        return FenceResult(
            FenceAction.RESTART, Outcome.DONE, Power.ON,
            f"{before} was replaced by {after}, which answers the link {waited:.1f} s after "
            f"the request ({asked})",
            f"agent restarted in {waited:.1f} s",
        )  # fmt: skip
    now = "the link is down" if after is None else f"{after} still answers"
    return FenceResult(
        FenceAction.RESTART, Outcome.FAILED, Power.ON if after is not None else Power.UNKNOWN,
        f"{asked}; after {timeout:g} s {now}",
        f"the agent did not come back as a new instance within {timeout:g} s",
    )  # fmt: skip
