"""``python -m engine.sim``: run a scenario and print its log, or check scenarios against theirs.

::

    python -m engine.sim run tests/scenarios/ha-restart-one            # print the log
    python -m engine.sim run tests/scenarios/ha-restart-one --update   # and write expected.log
    python -m engine.sim check tests/scenarios                         # compare every scenario
    python -m engine.sim check tests/scenarios --update                # rewrite the differing

``check`` prints a unified diff for each scenario whose log differs, writes a missing
``expected.log`` for review, and exits with status 1 if any differed (2 for a broken scenario).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .scenario import EXPECTED, ScenarioError, find
from .verify import Outcome, verify


def _run(directory: Path, update: bool) -> int:
    outcome = verify(directory, update=update)
    sys.stdout.write(outcome.produced)
    sys.stdout.flush()
    if outcome.written:
        print(f"-- wrote {directory / EXPECTED}", file=sys.stderr)
    elif not outcome.matches:
        print(
            f"-- differs from {directory / EXPECTED} (use --update to rewrite it)", file=sys.stderr
        )
    return 0


def _check(roots: Sequence[Path], update: bool) -> int:
    differed = 0
    total = 0
    for root in roots:
        for directory in find(root):
            total += 1
            outcome: Outcome = verify(directory, update=update)
            if outcome.written:
                print(f"WROTE   {directory}")
            elif outcome.matches:
                print(f"ok      {directory}")
            else:
                differed += 1
                print(f"DIFFERS {directory}")
                sys.stdout.write(outcome.diff)
    print(f"{total} scenario(s), {differed} differ")
    return 1 if differed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; :returns: the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.sim", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario and print its log")
    run.add_argument("scenario", type=Path)
    run.add_argument("--update", action="store_true", help="write the log as expected.log")
    check = sub.add_parser("check", help="compare scenarios with their expected logs")
    check.add_argument("roots", type=Path, nargs="+")
    check.add_argument("--update", action="store_true", help="rewrite the logs that differ")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.scenario, args.update)
        return _check(args.roots, args.update)
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
