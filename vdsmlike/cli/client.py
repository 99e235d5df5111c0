"""``vdsmlike-client``: call one verb or watch events from the command line, like vdsm-client.

    vdsmlike-client [--url URL] [--token T] [--timeout S] Namespace.verb [key=value ...]
    vdsmlike-client --events [PATTERN ...]

The same command talks to the engine's admin API (``ws://HOST:8080/api``): ``--user`` logs in
first (``Auth.login``, the password read from ``--password-file``, else ``$VDSMLIKE_PASSWORD``,
else asked on the terminal), or ``--token`` gives an earlier session's token::

    vdsmlike-client --url ws://127.0.0.1:8080/api --user admin --password-file F Hosts.list

With an engine URL (its path ends in ``/api``) or ``--user``, ``--events`` subscribes with
``Engine.subscribe``; otherwise with the agent's ``Host.subscribe``.

A value is parsed as JSON when it is valid JSON (``memSize=1024``, ``flags=[1,2]``), else taken as
a string (``vmID=3f0c...``). Exit status: 0 success, 1 the server answered with an error (a failed
login included), 2 usage error or no connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def read_password(path: str | None, environ: Mapping[str, str] | None = None) -> str:
    """
    The password for ``--user``: the first line of ``path`` (without its line break), else
    ``$VDSMLIKE_PASSWORD``, else asked on the terminal.

    :raises OSError: if the file cannot be read.
    :raises ValueError: if there is no file, no variable and no terminal to ask on.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is not None:
        with open(path, encoding="utf-8") as stream:
            return stream.readline().rstrip("\r\n")
    if "VDSMLIKE_PASSWORD" in env:
        return env["VDSMLIKE_PASSWORD"]
    if not sys.stdin.isatty():
        raise ValueError("give --password-file or $VDSMLIKE_PASSWORD")
    import getpass

    return getpass.getpass("Password: ")


def is_engine(url: str, user: str | None) -> bool:
    """:returns: whether the server is the engine's admin API (``--user``, or a ``/api`` path)."""
    return user is not None or urlsplit(url).path.rstrip("/").endswith("/api")


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
    parser.add_argument("--user", default=None, help="engine only: log in as this user first")
    parser.add_argument(
        "--password-file",
        default=None,
        help="with --user: a file whose first line is the password (default: $VDSMLIKE_PASSWORD,"
        " else asked)",
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
    args.password = None
    if args.user is not None:
        try:
            args.password = read_password(args.password_file)
        except (OSError, ValueError) as e:
            parser.error(f"cannot read the password: {e}")

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
        if args.user is not None:
            await client.call(
                "Auth.login", {"user": args.user, "password": args.password}, timeout=args.timeout
            )
        if args.events is not None:
            interrupted: list[bool] = []
            reactor.addSystemEventTrigger("before", "shutdown", interrupted.append, True)
            verb = "Engine.subscribe" if is_engine(args.url, args.user) else "Host.subscribe"
            await _watch(client, args.events or ["*"], verb)
            if interrupted:  # Ctrl-C: the reactor stops and closes the connection
                return
            _fail("connection lost", EXIT_USAGE)
        result = await client.call(args.verb, args.params, timeout=args.timeout)
    except RemoteError as e:
        detail = "" if e.data is None else "\n" + json.dumps(e.data, indent=4, sort_keys=True)
        _fail(describe_error(e) + detail, EXIT_REMOTE_ERROR)
    except CancelledError:
        raise
    except Exception as e:
        _fail(describe_error(e), EXIT_USAGE)
    print(json.dumps(result, indent=4, sort_keys=True))
    await client.close()


async def _watch(client: Any, patterns: list[str], verb: str) -> None:
    """Subscribe with ``verb`` and print events as JSON lines until the connection is lost."""

    def show(event_id: str, params: Any) -> None:
        sys.stdout.write(json.dumps({"event": event_id, "params": params}) + "\n")
        sys.stdout.flush()

    client.on_event(show)
    await client.subscribe(patterns, verb=verb)
    await client.when_closed()


def _fail(message: str, status: int) -> None:
    sys.stderr.write(f"vdsmlike-client: {message}\n")
    raise SystemExit(status)


if __name__ == "__main__":
    main()
