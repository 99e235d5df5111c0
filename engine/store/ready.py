"""``Readiness``: one outcome (a value or a failure) handed to any number of waiters."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure


class Readiness:
    """Lets many callers wait for one asynchronous start, each with its own Deferred (so no
    waiter's callbacks can change what the next one sees)."""

    def __init__(self) -> None:
        self._outcome: Any = None
        self._waiting: list[Deferred] = []

    def when_ready(self) -> Deferred:
        """A new Deferred firing with the outcome once known (at once if already known)."""
        if self._outcome is None:
            waiter: Deferred = Deferred()
            self._waiting.append(waiter)
            return waiter
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        return succeed(self._outcome)

    def reset(self) -> None:
        """Forget the outcome (the service is starting again)."""
        self._outcome = None

    def fire(self, outcome: Any) -> None:
        """Record the outcome (a value, or a :class:`Failure`) and pass it to every waiter."""
        self._outcome = outcome
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)
