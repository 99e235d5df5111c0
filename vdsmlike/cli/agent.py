"""``vdsmlike-agent``: run the host agent in the foreground until SIGTERM or SIGINT.

Running VMs are left running when the agent stops; the next start recovers them. After
``Host.restart`` the agent stops the same way and exits with status 75
(``vdsmlike.api.host.RESTART_EXIT_STATUS``) for its supervisor to start it again.
"""

from __future__ import annotations

import sys

from twisted.logger import Logger

from ..api.host import RESTART_EXIT_STATUS
from ..config import ConfigError, load_config
from ..logs import start_logging

log = Logger()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, start the services, run the reactor. :returns: the exit code."""
    try:
        config = load_config(argv)
    except ConfigError as e:
        print(f"vdsmlike-agent: {e}", file=sys.stderr)
        return 2
    start_logging()
    from twisted.internet import reactor

    from ..service import make_service

    top = make_service(config, reactor)
    status = {"code": 0}

    def fatal(failure, what: str) -> None:
        log.critical("{what}: {error}", what=what, error=failure.getErrorMessage())
        status["code"] = 1
        if reactor.running:
            reactor.stop()

    top.restart.exit = reactor.stop  # Host.restart: stop cleanly, then exit 75 (below)
    top.core.ready.addErrback(fatal, "cannot start")
    top.listener.url.addErrback(fatal, "cannot listen")
    reactor.callWhenRunning(top.startService)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    if top.restart.requested and status["code"] == 0:
        log.info("exiting with status {status} to be started again", status=RESTART_EXIT_STATUS)
        return RESTART_EXIT_STATUS
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
