"""The store's operations inside one transaction: every query group mixed together.

:meth:`engine.store.postgres.PostgresStore.transaction` hands one to a function that makes
several changes atomically; each ``PostgresStore`` method is one call on a fresh one.
"""

from __future__ import annotations

from .accounts import AccountQueries
from .affinity import AffinityQueries
from .events import EventQueries
from .hosts import HostQueries
from .jobs import JobQueries
from .vms import VmQueries


class StoreTransaction(
    HostQueries, VmQueries, EventQueries, JobQueries, AccountQueries, AffinityQueries
):
    """Every store operation, as coroutines on one open transaction.

    The methods are those of :class:`~engine.interfaces.IStore`, awaited rather than returning
    Deferreds, and all commit or roll back together. After an operation fails with
    :class:`~engine.store.errors.DuplicateName`, :class:`~engine.store.errors.InvalidValue` or
    a foreign-key :class:`~engine.store.errors.NotFound`, PostgreSQL has aborted the
    transaction: let the error propagate rather than catching it and going on. Valid only
    while the function it was given to runs; never keep it.

    :ivar now: the time every row written in this transaction is stamped with.
    """
