"""``Readiness``: one outcome (a value or a failure) handed to any number of waiters; and
``ReadyService``, a service whose start is asynchronous and whose stop waits for it."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
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


class ReadyService(Service):
    """
    A service that starts asynchronously: ``startService`` runs :meth:`_start`, whose result
    (or failure, after :meth:`_start_failed` has logged it) every :meth:`when_ready` waiter
    gets; ``stopService`` lets a start in progress finish, then runs :meth:`_stop`.
    """

    def __init__(self) -> None:
        self._readiness = Readiness()
        self._started: Deferred | None = None

    def when_ready(self) -> Deferred:
        """A new Deferred firing with the start's result, or failing with why it failed."""
        return self._readiness.when_ready()

    def startService(self) -> None:
        super().startService()
        self._readiness.reset()
        self._started = Deferred.fromCoroutine(self._start())
        self._started.addErrback(self._start_failed)
        self._started.addBoth(self._readiness.fire)

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop_after_start())

    async def _stop_after_start(self) -> None:
        if self._started is not None:
            try:  # a start in progress finishes first
                await self._readiness.when_ready()
            except Exception:
                pass  # logged when it happened
        await self._stop()

    async def _start(self) -> Any:
        """Start; :returns: what the waiters get."""
        raise NotImplementedError

    def _start_failed(self, failure: Failure) -> Failure:
        """Log a failed start; :returns: the failure, for the waiters."""
        return failure

    async def _stop(self) -> None:
        """Stop what :meth:`_start` started."""
