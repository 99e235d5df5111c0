"""``StoreService``: connects the store when the engine starts and closes it when it stops."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import StoreError
from .postgres import PostgresStore
from .ready import Readiness


class StoreService(Service):
    """Starts a :class:`PostgresStore` (connect, migrate) as the engine starts.

    :param store: the store to start and close.
    :param wait_for: called at start for a Deferred to wait on first (the embedded cluster's
        :meth:`~engine.store.cluster.PostgresClusterService.when_ready`); None to connect at
        once (``--db``).
    """

    log = Logger()

    def __init__(
        self, store: PostgresStore, *, wait_for: Callable[[], Deferred] | None = None
    ) -> None:
        self.store = store
        self._wait_for = wait_for
        self._started: Deferred | None = None
        self._readiness = Readiness()

    def when_ready(self) -> Deferred:
        """A new Deferred firing with the store once connected and migrated, or failing with
        the store error that prevented it (``StoreUnavailable``, ``MigrationFailed``, ...)."""
        return self._readiness.when_ready()

    def startService(self) -> None:
        super().startService()
        self._readiness.reset()
        self._started = Deferred.fromCoroutine(self._start())
        self._started.addErrback(self._start_failed)
        self._started.addBoth(self._readiness.fire)

    async def _start(self) -> PostgresStore:
        if self._wait_for is not None:
            await self._wait_for()
        return await self.store.start()

    def _start_failed(self, failure: Failure) -> Failure:
        if failure.check(StoreError):  # typed and self-explanatory: no traceback
            self.log.error("cannot open the store at {dsn}: {error}", dsn=self.store.dsn,
                           error=failure.value)
        else:
            self.log.failure("cannot open the store at {dsn}", failure, dsn=self.store.dsn)
        return failure

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._started is not None:
            try:  # a start in progress finishes first
                await self._readiness.when_ready()
            except Exception:
                pass  # logged when it happened
        self.store.close()
