"""The simulator's log: the engine's events and the world's effects, one line each.

Every line is ``<time> <severity> <TYPE> <subject>: <message>``, with the time right-aligned in
five columns and the severity padded to seven, so logs diff cleanly::

       17 warning HOST_FENCED h2: Host h2 fenced: its power management reports it is off; ...
       17 normal  SIM h3/web: VM started

``TYPE`` is an audit type of the engine (``engine/store/auditlog.py``), or one of the
simulator's own: ``CMD`` (a scenario command), ``REFUSED`` (the engine refused an admin
request), ``SIM`` (a physical effect in the simulated world), ``INVARIANT`` (a VM runs on two
hosts at once: the one thing that must never happen). The subject is ``host``, ``vm``,
``host/vm`` or ``cluster``. Nothing in a line depends on the wall clock or on randomness.
"""

from __future__ import annotations

from engine.decide.commands import Event


def subject(host: str | None, vm: str | None) -> str:
    """:returns: ``host/vm``, ``host``, ``vm`` or ``cluster``."""
    if host and vm:
        return f"{host}/{vm}"
    return host or vm or "cluster"


def _time(t: float) -> str:
    return f"{t:>5g}"


class SimLog:
    """The lines of one run, in the order they happened."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, t: float, severity: str, kind: str, about: str, message: str) -> None:
        """Add one line."""
        self.lines.append(f"{_time(t)} {severity:<7} {kind} {about}: {message}")

    def event(self, t: float, event: Event) -> None:
        """Add one of the engine's events."""
        self.line(t, str(event.severity), event.type, subject(event.host, event.vm), event.message)

    def command(self, t: float, text: str) -> None:
        """Add a scenario command."""
        self.line(t, "normal", "CMD", "scenario", text)

    def refused(self, t: float, text: str, reason: str) -> None:
        """Add the engine's refusal of an admin request."""
        self.line(t, "warning", "REFUSED", "scenario", f"{text}: {reason}")

    def sim(self, t: float, about: str, message: str) -> None:
        """Add a physical effect in the world."""
        self.line(t, "normal", "SIM", about, message)

    def violation(self, t: float, vm: str, hosts: list[str]) -> None:
        """Add a broken invariant: ``vm`` runs on every host of ``hosts``."""
        where = ", ".join(hosts)
        self.line(
            t, "alert", "INVARIANT", vm, f"VM {vm} runs on {len(hosts)} hosts at once: {where}"
        )

    def text(self) -> str:
        """:returns: the whole log, one line per line, ending with a newline."""
        return "".join(f"{line}\n" for line in self.lines)
