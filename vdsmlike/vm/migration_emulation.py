"""Emulated live migration, for hypervisors that cannot migrate: libvirt's test driver and the
in-memory twin. **Never used on QEMU**: :class:`~vdsmlike.virt.libvirt.LibvirtHypervisor` only
emulates on ``test:`` URIs.

Why: the engine's migration logic (limits, retries, cancel, convergence, the Down/Up hand-over)
must be exercised with hundreds of VMs, which real guests cannot give. The emulation keeps
everything above the hypervisor real: two agents, ``VM.migrationCreate`` over their JSON-RPC
link, hooks, slots, progress events and the convergence schedule; only the bytes are imagined.

The model (:class:`Transfer`, pure): RAM is sent in passes at the bandwidth (unlimited means
:data:`UNLIMITED_BPS`). While a pass runs the guest dirties memory at ``dirty_rate`` bytes/s
(0 unless a test sets it); when a pass ends, the dirtied bytes become the next pass, unless they
fit in the allowed downtime at the bandwidth: then the guest switches over and the migration is
done. A guest dirtying faster than the bandwidth never converges unless the downtime grows,
which is what a convergence schedule is for.

:class:`EmulatedMigration` drives one model on a clock, answers job statistics, takes bandwidth
and downtime changes, and can be aborted; the adapter moves the domain when it finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from ..virt.errors import HypervisorError
from .migration import JobStats

MIB = 1024 * 1024
#: What "unlimited bandwidth" moves per second in the emulation.
UNLIMITED_BPS = 1024 * MIB
#: QEMU's default allowed downtime (ms) until something sets one.
DEFAULT_DOWNTIME_MS = 300
#: Seconds between emulation steps.
TICK = 0.05
#: libvirt's message when a migration job is aborted.
ABORTED_MESSAGE = "operation aborted: migration out job: canceled by client"


@dataclass(frozen=True)
class Transfer:
    """
    The state of one emulated transfer (all sizes in bytes, times in s).

    :ivar remaining: bytes left in the current pass.
    :ivar dirty: bytes the guest dirtied during the current pass.
    """

    memory: int
    bandwidth: float
    dirty_rate: float = 0.0
    downtime_ms: int = DEFAULT_DOWNTIME_MS
    iteration: int = 1
    remaining: int = 0
    dirty: float = 0.0
    processed: int = 0
    elapsed: float = 0.0
    done: bool = False

    @property
    def rate(self) -> float:
        """Bytes per second actually moved."""
        return self.bandwidth if self.bandwidth > 0 else UNLIMITED_BPS


def start(
    memory: int,
    *,
    bandwidth_mib: int,
    dirty_rate: float = 0.0,
    downtime_ms: int = DEFAULT_DOWNTIME_MS,
) -> Transfer:
    """A transfer of ``memory`` bytes at ``bandwidth_mib`` MiB/s (0: unlimited)."""
    return Transfer(memory, bandwidth_mib * MIB, dirty_rate, downtime_ms, remaining=memory)


def advance(transfer: Transfer, dt: float) -> Transfer:
    """:returns: the transfer ``dt`` seconds later."""
    t = transfer
    left = dt
    for _ in range(100_000):  # passes can be tiny; a bound keeps a bad model from spinning
        if t.done or left <= 0:
            break
        sent = min(float(t.remaining), t.rate * left)
        spent = sent / t.rate
        left -= spent
        t = replace(
            t,
            remaining=t.remaining - int(sent),
            processed=t.processed + int(sent),
            elapsed=t.elapsed + spent,
            dirty=min(float(t.memory), t.dirty + t.dirty_rate * spent),
        )
        if t.remaining <= 0:
            t = _end_of_pass(t)
    if not t.done and left > 0:
        t = replace(t, elapsed=t.elapsed + left)
    return t


def _end_of_pass(t: Transfer) -> Transfer:
    if t.dirty <= t.rate * t.downtime_ms / 1000:
        return replace(t, processed=t.processed + int(t.dirty), remaining=0, dirty=0.0, done=True)
    return replace(t, iteration=t.iteration + 1, remaining=int(t.dirty), dirty=0.0)


def stats(t: Transfer) -> JobStats:
    """The job statistics libvirt would report for ``t``."""
    return JobStats(
        iteration=t.iteration,
        data_total=t.memory,
        data_processed=t.processed,
        data_remaining=t.remaining + int(t.dirty),
        elapsed_ms=int(t.elapsed * 1000),
        downtime=t.downtime_ms,
    )


class EmulatedMigration:
    """
    One emulated outgoing migration on a clock.

    :param clock: ``IReactorTime``; None runs the transfer to its end at once (synchronous
        adapters).
    :param finish: called once the transfer is done, to move the domain; may return a Deferred.
    :ivar done: fires with None once finished (and ``finish`` done), or fails with
        :class:`HypervisorError` when aborted or when ``finish`` failed.
    """

    def __init__(self, transfer: Transfer, finish: Callable[[], Any], clock: Any = None) -> None:
        self._transfer = transfer
        self._finish = finish
        self._clock = clock
        self._call: Any = None
        self.done: Deferred[None] = Deferred()
        if clock is None:
            while not self._transfer.done:
                self._transfer = advance(self._transfer, 3600.0)
                if not self._transfer.done and self._transfer.elapsed > 86400:
                    self._transfer = replace(self._transfer, done=True)
            self._end()
        else:
            self._last = clock.seconds()
            self._call = clock.callLater(TICK, self._tick)

    @property
    def finished(self) -> bool:
        """Whether the transfer is over (done or aborted)."""
        return self.done.called or self._transfer.done

    def stats(self) -> JobStats:
        """The job's statistics now."""
        return stats(self._transfer)

    def set_bandwidth(self, mib: int) -> None:
        """Change the bandwidth (MiB/s, 0 unlimited) from now on."""
        self._transfer = replace(self._transfer, bandwidth=mib * MIB)

    def set_downtime(self, ms: int) -> None:
        """Change the allowed downtime from now on."""
        self._transfer = replace(self._transfer, downtime_ms=ms)

    def abort(self) -> bool:
        """
        Abort the transfer; ``done`` fails with libvirt's "canceled by client" message.

        :returns: False if there was nothing left to abort.
        """
        if self.finished:
            return False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.done.errback(HypervisorError(ABORTED_MESSAGE))
        return True

    def _tick(self) -> None:
        now = self._clock.seconds()
        self._transfer = advance(self._transfer, max(0.0, now - self._last))
        self._last = now
        if self._transfer.done:
            self._end()
        else:
            self._call = self._clock.callLater(TICK, self._tick)

    def _end(self) -> None:
        d = maybeDeferred(self._finish)
        d.addCallbacks(lambda _: self.done.callback(None), self.done.errback)
