"""``vdsmlike-client``: call one agent verb or watch events from the command line, like vdsm-client.

    vdsmlike-client [--url URL] [--token T] [--timeout S] Namespace.verb [key=value ...]
    vdsmlike-client --events [PATTERN ...]

A value is parsed as JSON when it is valid JSON (``memSize=1024``, ``flags=[1,2]``), else taken as
a string (``vmID=3f0c...``). Exit status: 0 success, 1 the agent answered with an error, 2 usage
error or no connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_URL = "ws://127.0.0.1:54321/jsonrpc"
DEFAULT_STATE_DIR = "/var/lib/vdsmlike"

EXIT_OK, EXIT_REMOTE_ERROR, EXIT_USAGE = 0, 1, 2


def default_url(environ: Mapping[str, str] | None = None) -> str:
    """
    :returns: the content of ``<state dir>/agent.url`` (``$VDSMLIKE_STATE_DIR``, else
        ``/var/lib/vdsmlike``) if that file exists, else ``ws://127.0.0.1:54321/jsonrpc``.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    path = Path(env.get("VDSMLIKE_STATE_DIR") or DEFAULT_STATE_DIR) / "agent.url"
    try:
        return path.read_text().strip() or DEFAULT_URL
    except OSError:
        return DEFAULT_URL


def parse_value(text: str) -> Any:
    """:returns: ``text`` decoded as JSON when it is valid JSON, else ``text`` itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """
    Turn ``key=value`` arguments into named params.

    :raises ValueError: for an argument without ``=`` or with an empty key.
    """
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        params[key] = parse_value(value)
    return params


def build_parser() -> argparse.ArgumentParser:
    """:returns: the argument parser (argparse exits with status 2 on usage errors)."""
    parser = argparse.ArgumentParser(
        prog="vdsmlike-client", description="Call a vdsmlike agent verb over JSON-RPC."
    )
    parser.add_argument("--url", default=None, help="agent URL (default: <state dir>/agent.url)")
    parser.add_argument(
        "--token",
        default=os.environ.get("VDSMLIKE_TOKEN"),
        help="auth token (default: $VDSMLIKE_TOKEN)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--events",
        nargs="*",
        metavar="PATTERN",
        default=None,
        help="print events matching the patterns (default '*') until Ctrl-C",
    )
    parser.add_argument("verb", nargs="?", help="Namespace.verb, e.g. Host.getStats")
    parser.add_argument("params", nargs="*", metavar="key=value")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the command; always exits through ``SystemExit`` with the status above."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.events is None and not args.verb:
        parser.error("a verb is required (or --events)")
    if args.events is not None and args.verb:
        args.events.append(args.verb)
        args.events.extend(args.params)
    try:
        args.params = parse_params(args.params) if args.events is None else {}
    except ValueError as e:
        parser.error(str(e))
    args.url = args.url or default_url()

    from twisted.internet import task

    task.react(_run, (args,))


async def _run(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.defer import CancelledError

    from ..client import RemoteError, connect, describe_error

    try:
        client = await connect(reactor, args.url, token=args.token, timeout=args.timeout)
    except Exception as e:
        _fail(f"cannot connect to {args.url}: {describe_error(e)}", EXIT_USAGE)
    try:
        if args.events is not None:
            interrupted: list[bool] = []
            reactor.addSystemEventTrigger("before", "shutdown", interrupted.append, True)
            await _watch(client, args.events or ["*"])
            if interrupted:  # Ctrl-C: the reactor stops and closes the connection
                return
            _fail("connection lost", EXIT_USAGE)
        result = await client.call(args.verb, args.params, timeout=args.timeout)
    except RemoteError as e:
        _fail(describe_error(e), EXIT_REMOTE_ERROR)
    except CancelledError:
        raise
    except Exception as e:
        _fail(describe_error(e), EXIT_USAGE)
    print(json.dumps(result, indent=4, sort_keys=True))
    await client.close()


async def _watch(client: Any, patterns: list[str]) -> None:
    """Subscribe and print events as JSON lines; returns when the connection is lost."""

    def show(event_id: str, params: Any) -> None:
        sys.stdout.write(json.dumps({"event": event_id, "params": params}) + "\n")
        sys.stdout.flush()

    client.on_event(show)
    await client.subscribe(patterns)
    await client.when_closed()


def _fail(message: str, status: int) -> None:
    sys.stderr.write(f"vdsmlike-client: {message}\n")
    raise SystemExit(status)


if __name__ == "__main__":
    main()
