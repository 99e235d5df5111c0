"""``StoreService``: connects the store when the engine starts and closes it when it stops."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import StoreError
from .postgres import PostgresStore
from .ready import ReadyService


class StoreService(ReadyService):
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
        super().__init__()
        self.store = store
        self._wait_for = wait_for

    def when_ready(self) -> Deferred:
        """A new Deferred firing with the store once connected and migrated, or failing with
        the store error that prevented it (``StoreUnavailable``, ``MigrationFailed``, ...)."""
        return self._readiness.when_ready()

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

    async def _stop(self) -> None:
        self.store.close()
