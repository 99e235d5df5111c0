"""Blocking runners: run blocking callables (libvirt calls) off the reactor, serialized per key.

:class:`ThreadPoolRunner` owns a thread pool and keeps, per key, the tail of a chain of calls: a
call with a key starts only after every earlier call with that key finished, whatever their
outcome. Calls with different keys (and calls keyed ``None``) run concurrently, up to the pool
size. The tail of a key is forgotten as soon as that key goes idle, so an agent that saw 10,000
VM ids keeps no per-id state.

:class:`SynchronousRunner` calls inline and returns an already-fired Deferred, for unit tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..interfaces import IBlockingRunner


class RunnerStopped(Exception):
    """The runner was stopped (or not started) and accepts no more work."""


@implementer(IBlockingRunner)
class ThreadPoolRunner:
    """
    A thread pool of its own, with calls serialized per key in submission order.

    ``run`` must be called from the reactor thread.

    :param reactor: the reactor Deferreds fire in (provides ``callFromThread``).
    :param max_threads: the most calls running at once.
    :param name: the pool's name, seen in thread names and logs.
    """

    log = Logger()

    def __init__(
        self, reactor: IReactorFromThreads, *, max_threads: int = 8, name: str = "libvirt"
    ) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)
        self._tails: dict[Hashable, Deferred[None]] = {}
        self._running = False
        self._shutdown_trigger: Any = None

    @property
    def pending_keys(self) -> int:
        """How many keys have a call running or queued (for tests and diagnostics)."""
        return len(self._tails)

    def start(self) -> None:
        """Start the worker threads; stop them with the reactor if nobody else does."""
        if self._running:
            return
        self._running = True
        self._pool.start()
        if hasattr(self._reactor, "addSystemEventTrigger"):
            self._shutdown_trigger = self._reactor.addSystemEventTrigger(  # type: ignore
                "during", "shutdown", self._stop_blocking
            )

    def stop(self) -> Deferred[None]:
        """
        Refuse new work, let the calls already submitted finish, and join the threads.

        :returns: a Deferred firing with None once every worker thread is gone.
        """
        if not self._running:
            return succeed(None)
        self._running = False
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)  # type: ignore
            self._shutdown_trigger = None
        done: Deferred[None] = Deferred()

        def join() -> None:
            self._pool.stop()
            self._reactor.callFromThread(done.callback, None)

        threading.Thread(target=join, name=f"{self._pool.name}-stop", daemon=True).start()
        return done

    def _stop_blocking(self) -> None:
        """Join the threads from a reactor shutdown trigger."""
        self._running = False
        self._shutdown_trigger = None
        self._pool.stop()

    def run(self, key: Hashable, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """
        Call ``fn(*args, **kwargs)`` in a worker thread after every earlier call keyed ``key``.

        :returns: a Deferred firing in the reactor thread with ``fn``'s result, or failing with
            what ``fn`` raised; failing with :class:`RunnerStopped` if the runner is not running.
        """
        if not self._running:
            return fail(RunnerStopped(f"runner {self._pool.name!r} is not running"))
        if key is None:
            return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
        result: Deferred[Any] = Deferred()
        done: Deferred[None] = Deferred()
        previous = self._tails.get(key)
        self._tails[key] = done

        def finish(outcome: object) -> None:
            if self._tails.get(key) is done:
                del self._tails[key]
            done.callback(None)
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def begin(_: object = None) -> None:
            d = deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
            d.addBoth(finish)

        if previous is None:
            begin()
        else:
            previous.addCallback(begin)
        return result


@implementer(IBlockingRunner)
class SynchronousRunner:
    """Runs every call inline, in the caller's thread; for tests. Keys are ignored."""

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> Deferred[None]:
        """:returns: a Deferred that has already fired with None."""
        return succeed(None)

    def run(self, key: Hashable, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """
        Call ``fn(*args, **kwargs)`` now.

        :returns: a Deferred that has already fired with the result or failed with what ``fn``
            raised.
        """
        try:
            return succeed(fn(*args, **kwargs))
        except BaseException:
            return fail()
