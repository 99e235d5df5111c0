"""The emulated outgoing migrations of one hypervisor adapter, kept by VM id.

Both adapters that emulate live migration (the in-memory twin, and the libvirt adapter on
``test:`` URIs) keep the same book: the transfer running for each VM
(:class:`~vdsmlike.vm.migration_emulation.EmulatedMigration`), the bandwidth and downtime set
before a VM's next migration starts, and the guests' dirty rates (a test knob). The adapters
decide when a domain leaves; this book only starts, tunes, aborts and forgets transfers, and
runs in the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..vm import migration_emulation as emulation
from ..vm.migration import JobStats, MigrationRequest
from .errors import HypervisorError

#: libvirt's answer to a second migration of a VM that migrates.
BUSY_MESSAGE = "Requested operation is not valid: migration is running"
#: libvirt's answer to an abort when nothing runs.
NO_JOB_MESSAGE = "Requested operation is not valid: no job is active on the domain"


class EmulatedMigrations:
    """The running emulated migrations and the settings for the next ones, by VM id."""

    def __init__(self) -> None:
        self._running: dict[str, emulation.EmulatedMigration] = {}
        self._next_settings: dict[str, dict[str, int]] = {}
        self._dirty_rates: dict[str, float] = {}

    def get(self, vm_id: str) -> emulation.EmulatedMigration | None:
        """:returns: the migration running for ``vm_id``, or None."""
        return self._running.get(vm_id)

    def refuse_second(self, vm_id: str) -> None:
        """:raises HypervisorError: when ``vm_id`` migrates already, as libvirt does."""
        if vm_id in self._running:
            raise HypervisorError(BUSY_MESSAGE)

    def start(
        self,
        vm_id: str,
        memory: int,
        request: MigrationRequest,
        finish: Callable[[], Any],
        clock: Any,
    ) -> emulation.EmulatedMigration:
        """
        Start the transfer of ``memory`` bytes, with the bandwidth and downtime set since the
        last one (else the request's bandwidth and QEMU's default downtime).

        :param finish: moves the domain once the transfer is done (see ``EmulatedMigration``).
        :param clock: ``IReactorTime``, or None to run the transfer to its end at once.
        :returns: the running migration; it is forgotten once its ``done`` fired.
        """
        settings = self._next_settings.pop(vm_id, {})
        transfer = emulation.start(
            memory,
            bandwidth_mib=settings.get("speed", request.bandwidth),
            dirty_rate=self._dirty_rates.get(vm_id, 0.0),
            downtime_ms=settings.get("downtime", emulation.DEFAULT_DOWNTIME_MS),
        )
        running = emulation.EmulatedMigration(transfer, finish, clock)
        if not running.done.called:
            self._running[vm_id] = running
            running.done.addBoth(self._forget, vm_id, running)
        return running

    def _forget(self, result: Any, vm_id: str, running: emulation.EmulatedMigration) -> Any:
        if self._running.get(vm_id) is running:
            del self._running[vm_id]
        return result

    def stats(self, vm_id: str) -> JobStats | None:
        """:returns: the statistics of ``vm_id``'s running migration, or None."""
        running = self._running.get(vm_id)
        return running.stats() if running is not None else None

    def abort(self, vm_id: str) -> bool:
        """Abort ``vm_id``'s migration. :returns: False when there was none left to abort."""
        running = self._running.get(vm_id)
        return running is not None and running.abort()

    def apply(self, vm_id: str, name: str, value: int) -> None:
        """Set ``speed`` (MiB/s) or ``downtime`` (ms): for the running migration, else the next."""
        running = self._running.get(vm_id)
        if running is None:
            self._next_settings.setdefault(vm_id, {})[name] = value
        elif name == "speed":
            running.set_bandwidth(value)
        else:
            running.set_downtime(value)

    def set_dirty_rate(self, vm_id: str, bytes_per_s: float) -> None:
        """How fast the guest dirties memory while it migrates (0 by default)."""
        self._dirty_rates[vm_id] = bytes_per_s
