"""``vdsmlike-mom-eval``: run MOM policy files against host and guest data given as JSON.

::

    vdsmlike-mom-eval POLICY_FILE... [--data DATA.json]
    vdsmlike-mom-eval [POLICY_FILE...] [--data DATA.json] --repl

The files are named and ordered as the policy store orders a policy directory (base name without
``.policy``, sorted), concatenated, and evaluated once with ``Host`` and ``Guests`` built from
the data file::

    {"host": {"properties": {...}, "stats": [{...}, ...]},
     "guests": [{"properties": {"uuid": "...", "name": "vm1"}, "stats": {...}}]}

``stats`` is a list of rows, oldest first, or one row; an optional ``fields`` list declares more
statistic names. Every name in any row is declared, and so is every field the embedded MOM
collects (host memory, KSM and CPU; guest memory, balloon and CPU/IO tune), so a field missing
from the data reads ``None``, as a field that was not collected does in the agent. The output
is the controls each entity ends up with, as JSON. With ``--repl`` the files (if any) are
evaluated first, then forms are read from standard input and each result is printed, like
MOM's ``Parser.py`` REPL.

A policy error prints its ``PolicyError`` message on standard error and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .collectors import guest as guest_collector
from .collectors.host import KSM_FILES, HostCpu, HostMemory
from .entity import Entity
from .errors import PolicyError
from .evaluator import Evaluator
from .lexer import CLOSERS, OPENERS, tokenize
from .parser import parse
from .policy import concatenate, policy_name

PROG = "vdsmlike-mom-eval"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    :param argv: the arguments, without the program name; by default ``sys.argv[1:]``.
    :returns: the exit status: 0, or 1 after a policy, data or file error.
    """
    args = _parser().parse_args(argv)
    if not args.policies and not args.repl:
        _parser().error("give at least one POLICY_FILE, or --repl")
    try:
        host, guests = _load_data(args.data)
        text = _read_policies(args.policies)
    except (OSError, ValueError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    evaluator = Evaluator({"Host": host, "Guests": guests})
    if text is not None:
        try:
            evaluator.eval_text(text)
        except PolicyError as error:
            print(error, file=sys.stderr)
            return 1
    if args.repl:
        return repl(evaluator, sys.stdin, sys.stdout, sys.stderr)
    print(json.dumps(controls(host, guests), indent=2, sort_keys=True, default=repr))
    return 0


def _parser() -> argparse.ArgumentParser:
    """:returns: the argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate MOM policy files against host and guest data and print the "
        "controls they set.",
    )
    parser.add_argument("policies", nargs="*", metavar="POLICY_FILE", help="policy files")
    parser.add_argument("--data", metavar="DATA.json", help="host and guest data ('-': stdin)")
    parser.add_argument(
        "--repl", action="store_true", help="read forms from stdin and print each result"
    )
    return parser


def _read_policies(paths: Sequence[str]) -> str | None:
    """Read policy files and join them in the store's order.

    :returns: the program, or None when no file was given.
    :raises OSError: when a file cannot be read.
    :raises ValueError: when two files have the same policy name.
    """
    if not paths:
        return None
    named: dict[str, str] = {}
    for path in paths:
        name = policy_name(path)
        if name in named:
            raise ValueError(f"two policy files are named {name!r}")
        with open(path, encoding="utf-8") as policy:
            named[name] = policy.read()
    return concatenate(named)


#: What the embedded MOM collects (see ``mom.collectors``): declared for every entity.
HOST_FIELDS = (
    HostMemory.fields
    | HostCpu.fields
    | {f"ksm_{name}" for name in KSM_FILES}
    | {"ksm_shareable", "ksmd_cpu_usage"}
)
GUEST_FIELDS = guest_collector.GUEST_FIELDS | guest_collector.GUEST_OPTIONAL


def _load_data(path: str | None) -> tuple[Entity, list[Entity]]:
    """Build the host and guest entities from a data file.

    :returns: the host (empty without a file) and the guests.
    :raises OSError: when the file cannot be read.
    :raises ValueError: when it is not JSON of the documented shape.
    """
    if path is None:
        return Entity(), []
    if path == "-":
        data = json.load(sys.stdin)
    else:
        with open(path, encoding="utf-8") as source:
            data = json.load(source)
    if not isinstance(data, dict):
        raise ValueError("data: expected a JSON object with 'host' and 'guests'")
    guests = data.get("guests", [])
    if not isinstance(guests, list):
        raise ValueError("data: 'guests' must be a list")
    return (
        _entity(data.get("host", {}), "host", HOST_FIELDS),
        [_entity(guest, f"guests[{index}]", GUEST_FIELDS) for index, guest in enumerate(guests)],
    )


def _entity(spec: Any, where: str, collected: frozenset[str]) -> Entity:
    """:returns: an Entity from ``{"properties", "stats", "fields"}``; :raises ValueError:."""
    if not isinstance(spec, dict):
        raise ValueError(f"data: {where} must be an object")
    properties = spec.get("properties", {})
    stats = spec.get("stats", [])
    fields = spec.get("fields")
    if isinstance(stats, dict):
        stats = [stats]
    if not isinstance(properties, dict):
        raise ValueError(f"data: {where}.properties must be an object")
    if not isinstance(stats, list) or not all(isinstance(row, dict) for row in stats):
        raise ValueError(f"data: {where}.stats must be an object or a list of objects")
    if fields is not None and not (
        isinstance(fields, list) and all(isinstance(name, str) for name in fields)
    ):
        raise ValueError(f"data: {where}.fields must be a list of names")
    declared = {name for row in stats for name in row} | set(fields or ()) | collected
    return Entity(properties, stats, declared)


def controls(host: Entity, guests: Sequence[Entity]) -> dict[str, Any]:
    """:returns: ``{"host": {...}, "guests": [{"uuid", "name", "controls"}...]}``."""
    listed = []
    for guest in guests:
        entry: dict[str, Any] = {
            key: guest.properties[key] for key in ("uuid", "name") if key in guest.properties
        }
        entry["controls"] = dict(guest.controls)
        listed.append(entry)
    return {"host": dict(host.controls), "guests": listed}


def repl(evaluator: Evaluator, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """Read forms from ``stdin`` and print each result, until end of input.

    A form may span lines: input is collected until its brackets balance. Errors are printed
    on ``stderr`` and the loop goes on, with the definitions made so far.

    :returns: 0, or 1 if any form failed.
    """
    failed = False
    pending = ""
    interactive = stdin.isatty()
    while True:
        if interactive:
            stdout.write("... " if pending else ">>> ")
            stdout.flush()
        line = stdin.readline()
        pending += line
        if line and _incomplete(pending):
            continue
        if tokenize(pending):
            failed = not _run(evaluator, pending, stdout, stderr) or failed
        pending = ""
        if not line:
            return 1 if failed else 0


def _incomplete(text: str) -> bool:
    """:returns: whether ``text`` opens more brackets than it closes (so far, never fewer)."""
    depth = 0
    for token in tokenize(text):
        if token.kind in OPENERS:
            depth += 1
        elif token.kind in CLOSERS:
            depth -= 1
            if depth < 0:
                return False
    return depth > 0


def _run(evaluator: Evaluator, text: str, stdout: TextIO, stderr: TextIO) -> bool:
    """Evaluate each form of ``text``, printing results; :returns: False after an error."""
    try:
        for form in parse(text):
            print(evaluator.eval(form), file=stdout)
    except PolicyError as error:
        print(error, file=stderr)
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
