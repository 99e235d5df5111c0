"""``vdsmlike-engine``: run the engine in the foreground until SIGTERM or SIGINT.

Without ``--db`` the engine starts (and on exit stops) its own PostgreSQL in the state dir. The
first start creates the ``admin`` account and prints its password once. Hosts' VMs keep running
when the engine stops; the next start reconnects and converges.
"""

from __future__ import annotations

import sys

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from vdsmlike.logs import start_logging

from .config import ConfigError, load_config

log = Logger()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, start the services, run the reactor. :returns: the exit code."""
    try:
        config = load_config(argv)
    except ConfigError as e:
        print(f"vdsmlike-engine: {e}", file=sys.stderr)
        return 2
    start_logging(config.log_level)
    from twisted.internet import reactor

    from .service import make_service

    try:
        top = make_service(config, reactor)
    except OSError as e:
        print(f"vdsmlike-engine: cannot use state dir {config.state_dir}: {e.strerror}",
              file=sys.stderr)
        return 2
    status = {"code": 0}

    def fatal(failure, what: str) -> None:
        log.critical("{what}: {error}", what=what, error=failure.getErrorMessage())
        status["code"] = 1
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping

    def started() -> None:
        top.startService()
        top.url.addErrback(fatal, "cannot start")

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
