"""Pure: the per-host migration limits (VDSM's ``max_outgoing_migrations`` and
``max_incoming_migrations``, 2 each by default), as slots held by VM ids.

Outgoing migrations beyond the limit *wait* in arrival order, as behind VDSM's semaphore: the
VM is already ``Migration Source`` and its migration starts when a slot frees. Incoming ones
beyond the limit are *refused* (``VM.migrationCreate`` answers 82, ``migrateLimit``); the
source then retries later, as VDSM's does. A ``VM.migrate`` carrying ``outgoingLimit`` or a
``VM.migrationCreate`` carrying ``incomingLimit`` changes the host's limit for every later
migration, as in VDSM.
"""

from __future__ import annotations


class Slots:
    """
    Slots of one direction: up to ``limit`` holders, then waiters in arrival order.

    :ivar holders: VM ids holding a slot, in the order they got it.
    :ivar waiting: VM ids waiting for one, first in line first.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a migration limit must be at least 1, got {limit}")
        self.limit = limit
        self.holders: list[str] = []
        self.waiting: list[str] = []

    def take(self, key: str) -> bool:
        """
        Take a slot if one is free and nobody waits before ``key``.

        :returns: whether ``key`` holds a slot now (also True if it held one already).
        """
        if key in self.holders:
            return True
        if len(self.holders) < self.limit and not self.waiting:
            self.holders.append(key)
            return True
        return False

    def wait(self, key: str) -> bool:
        """
        Take a slot, or join the line for one.

        :returns: whether ``key`` holds a slot now; if not, it waits until :meth:`release`
            or :meth:`set_limit` hands it one (they return it).
        """
        if self.take(key):
            return True
        if key not in self.waiting:
            self.waiting.append(key)
        return False

    def release(self, key: str) -> list[str]:
        """
        Give up ``key``'s slot, or its place in line.

        :returns: the waiters that got a slot because of it, in order.
        """
        if key in self.holders:
            self.holders.remove(key)
        elif key in self.waiting:
            self.waiting.remove(key)
        return self._promote()

    def set_limit(self, limit: int) -> list[str]:
        """
        Change the limit; holders above a lowered limit keep their slots until they release.

        :returns: the waiters that got a slot because of a raised limit.
        """
        if limit < 1:
            raise ValueError(f"a migration limit must be at least 1, got {limit}")
        self.limit = limit
        return self._promote()

    def _promote(self) -> list[str]:
        promoted = []
        while self.waiting and len(self.holders) < self.limit:
            key = self.waiting.pop(0)
            self.holders.append(key)
            promoted.append(key)
        return promoted


class MigrationSlots:
    """A host's outgoing and incoming slots."""

    def __init__(self, *, outgoing: int = 2, incoming: int = 2) -> None:
        self.outgoing = Slots(outgoing)
        self.incoming = Slots(incoming)
