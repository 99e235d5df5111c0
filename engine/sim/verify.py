"""Comparing a scenario's log with its golden ``expected.log`` (the tests and the CLI share it)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from .runner import run
from .scenario import EXPECTED, load


@dataclass(frozen=True, slots=True)
class Outcome:
    """
    :ivar produced: the log the run produced (lines ending with newlines).
    :ivar expected: the golden log, or None when there was none.
    :ivar written: ``expected.log`` was written (it was missing, or ``update``).
    :ivar diff: a unified diff, expected → produced (empty when they match).
    """

    produced: str
    expected: str | None
    written: bool
    diff: str

    @property
    def matches(self) -> bool:
        """:returns: whether the produced log is the expected one."""
        return self.expected == self.produced


def verify(directory: str | Path, *, update: bool = False) -> Outcome:
    """
    Run the scenario in ``directory`` and compare its log with ``expected.log``.

    :param update: write the produced log as ``expected.log`` when it differs.
    :returns: the outcome; a missing ``expected.log`` is written (for review) and counts as
        matching only after it was written.
    :raises engine.sim.scenario.ScenarioError: for a broken scenario.
    """
    path = Path(directory)
    produced = "".join(f"{line}\n" for line in run(load(path)))
    golden = path / EXPECTED
    expected = golden.read_text() if golden.exists() else None
    diff = ""
    if expected != produced:
        diff = "".join(
            difflib.unified_diff(
                (expected or "").splitlines(keepends=True),
                produced.splitlines(keepends=True),
                f"{path.name}/{EXPECTED}",
                f"{path.name} (this run)",
            )
        )
    written = False
    if expected is None or (update and expected != produced):
        golden.write_text(produced)
        written = True
        expected, diff = produced, ""
    return Outcome(produced, expected, written, diff)
