"""``ConsoleRelay``: VMs' serial consoles, read from the hosts they run on and streamed to watchers.

A console is read with the agent's ``VM.getConsoleOutput`` (byte offsets into the VM's serial
log, cut at UTF-8 boundaries, ``reset`` when the log was recreated). The relay serves two uses:

- :meth:`ConsoleRelay.read`: one read from the VM's current host (``VMs.console``).
- :meth:`ConsoleRelay.watch`: a stream of what the guest writes from now on (``VMs.consoleWatch``).
  One :class:`ConsoleStream` per VM polls the VM's host every ``interval`` seconds from its
  offset, only while at least one watcher is there, and hands each new piece to every watcher.
  It follows the VM: when the VM runs elsewhere (migrated, or restarted on another host) or
  stopped in between, the next piece is read from offset 0 of the new log and says ``reset``.
  While the VM runs nowhere the stream waits; a lost host link is retried at the next tick,
  logged once per outage.

A watcher joining a stream at another offset than the stream's catches up with reads of its own
(:func:`catch_up`) until it stands where the stream does, then shares it; a watcher ahead of
the stream (its offset came from a fresher read) waits for the stream to pass it. Every watcher
thus receives its bytes once each, in order, from where it started. The decisions are the pure
functions :func:`~engine.decide.console.plan_read`, :func:`~engine.decide.console.advance` and
:func:`~engine.decide.console.catch_up` (:mod:`engine.decide.console`); the clock is an injected
``IReactorTime``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vdsmlike.client import LinkLost, RemoteError

# The decisions; importable from here too, as they were before they moved (tests import them).
from .decide.console import (
    NOWHERE,
    ReadPlan,
    Step,
    StreamPosition,
    advance,
    catch_up,
    piece,
    plan_read,
)
from .store.errors import Conflict, NotFound

#: The agent's verb.
READ_VERB = "VM.getConsoleOutput"
#: VDSM's "Operation not supported": the VM has no file-backed serial console.
NO_SERIAL_CONSOLE = 75
DEFAULT_INTERVAL = 0.25
DEFAULT_CHUNK = 64 * 1024

Listener = Callable[[dict[str, Any]], None]


class ConsoleUnavailable(Conflict):
    """The console cannot be read now: the VM runs on no host, its host is not reachable, or
    its agent refused (e.g. the VM has no file-backed serial port). The API answers 409."""


@dataclass(frozen=True)
class ConsolePlace:
    """
    Where a VM's console is, now.

    :ivar vm_name: for messages.
    :ivar host_id: the host the VM runs on, or None when it runs nowhere.
    :ivar host_name: for messages.
    :ivar link: the host's ``IHostLink`` (connected or not).
    """

    vm_name: str
    host_id: UUID | None = None
    host_name: str = ""
    link: Any = None


#: ``locate(vm_id) -> ConsolePlace``, raising the store's ``NotFound`` for an unknown VM.
Locate = Callable[[UUID], ConsolePlace]


@dataclass(eq=False)
class ConsoleWatch:
    """
    One watcher of one VM's console.

    :ivar vm_id: the VM.
    :ivar start: where this watcher's stream starts (the offset answered to the client).
    """

    vm_id: UUID
    listener: Listener
    start: int = 0
    position: int = 0
    joined: bool = False
    reading: bool = False
    probed: bool = False
    generation: int = 0
    stopped: bool = False
    _stream: ConsoleStream | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop receiving (idempotent); the stream stops with its last watcher."""
        if self.stopped:
            return
        self.stopped = True
        if self._stream is not None:
            self._stream.remove(self)


class ConsoleStream:
    """
    One VM's console stream: one poller shared by its watchers (see the module docstring).

    :param on_idle: called once the last watcher left (the relay forgets the stream).
    """

    log = Logger()

    def __init__(
        self,
        vm_id: UUID,
        *,
        locate: Locate,
        clock: IReactorTime,
        interval: float,
        chunk: int,
        timeout: float,
        on_idle: Callable[[ConsoleStream], None],
    ) -> None:
        self.vm_id = vm_id
        self._locate = locate
        self._clock = clock
        self._interval = interval
        self._chunk = chunk
        self._timeout = timeout
        self._on_idle = on_idle
        self.position = NOWHERE
        self.watchers: list[ConsoleWatch] = []
        self.running = True
        #: Reads the stream made (watchers' own catch-up reads not counted).
        self.reads = 0
        self._ready = False
        self._starting = False
        self._waiting: list[Deferred[None]] = []
        self._call: IDelayedCall | None = None
        self._reading = False
        self._epoch = 0
        self._trouble: str | None = None

    # -- watchers ------------------------------------------------------------------------

    async def add(self, watch: ConsoleWatch, offset: int | None) -> ConsoleWatch:
        """
        Add a watcher, starting the stream first if it is new.

        :param offset: where the watcher wants to start; None: where the stream stands.
        :returns: ``watch``, with ``start`` set.
        :raises ConsoleUnavailable: when the host refused the stream's first read.
        """
        watch._stream = self
        self.watchers.append(watch)
        try:
            await self._when_started(offset)
        except Exception:
            self.remove(watch)
            raise
        if watch.stopped:
            return watch
        located = self.position.host is not None
        start = offset if located and offset is not None else self.position.offset
        watch.start = watch.position = start
        self._examine(watch)
        return watch

    def remove(self, watch: ConsoleWatch) -> None:
        """Forget a watcher; without watchers the stream stops."""
        if watch in self.watchers:
            self.watchers.remove(watch)
        watch.generation += 1
        if not self.watchers and self.running:
            self.stop()
            self._on_idle(self)

    def stop(self) -> None:
        """Stop polling; reads in flight are ignored when they end."""
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for watch in list(self.watchers):
            watch.generation += 1

    def vm_stopped(self) -> None:
        """The VM went Down: its next run writes a new log, read from 0 with reset."""
        self._epoch += 1
        self.position = NOWHERE

    # -- starting ------------------------------------------------------------------------

    def _when_started(self, offset: int | None) -> Deferred[None]:
        """:returns: a Deferred firing once the stream has its first position (the first
        watcher's ``offset`` decides it), failing if the host refused the first read."""
        if self._ready:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        if not self._starting:
            self._starting = True
            Deferred.fromCoroutine(self._start(offset)).addBoth(self._release)
        return waiter

    def _release(self, result: Any) -> None:
        self._starting = False
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            for waiter in waiting:
                waiter.errback(result.value)
            return
        self._ready = True
        for waiter in waiting:
            waiter.callback(None)
        self._schedule(self._interval)

    async def _start(self, offset: int | None) -> None:
        """Set the first position: ``offset``, else the end of the log (one read of 0 bytes)."""
        place = self._locate(self.vm_id)
        if place.host_id is None:
            return
        if offset is not None:
            self.position = StreamPosition(place.host_id, offset)
            return
        try:
            answer = await self._call_agent(place, None, 0)
        except RemoteError as e:
            if e.code == NO_SERIAL_CONSOLE:
                raise ConsoleUnavailable(refusal(place, e)) from None
            self._troubled(place, e)
            return
        except (LinkLost, defer.TimeoutError) as e:
            self._troubled(place, e)  # the first read, from 0 with reset, catches up
            return
        self.position = StreamPosition(place.host_id, int(answer["next"]))

    # -- polling -------------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if self.running and self._call is None:
            self._call = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        if not self.running or self._reading:
            return
        place = self._place()
        plan = plan_read(self.position, None if place is None else place.host_id)
        if plan is None or place is None:
            self.position = NOWHERE  # the VM runs nowhere: its next run writes a new log
            self._examine_all()
            self._schedule(self._interval)
            return
        self._reading = True
        self.reads += 1
        d = self._call_agent(place, plan.offset, self._chunk)
        d.addCallbacks(
            self._read,
            self._read_failed,
            callbackArgs=(plan, place, self._epoch),
            errbackArgs=(place,),
        )
        d.addErrback(self._broken, "read")
        d.addBoth(self._after_read)

    def _place(self) -> ConsolePlace | None:
        try:
            return self._locate(self.vm_id)
        except NotFound:
            return None  # removed while watched: nothing to read until the watchers leave

    def _read(
        self, answer: dict[str, Any], plan: ReadPlan, place: ConsolePlace, epoch: int
    ) -> bool:
        if not self.running:
            return False
        self._recovered(place)
        position, news = advance(plan, answer)
        if epoch == self._epoch:
            self.position = position
        if news is not None:
            self._publish(news)
        # More is there: read on at once, unless this read was stuck (half a character at
        # the log's end), which only the guest's next bytes end.
        return int(answer["offset"]) < int(answer["next"]) < int(answer.get("size", 0))

    def _read_failed(self, failure: Failure, place: ConsolePlace) -> bool:
        failure.trap(RemoteError, LinkLost, defer.TimeoutError)
        if self.running:
            self._troubled(place, failure.value)
        return False

    def _broken(self, failure: Failure, what: str) -> bool:
        """A bug (or an answer not shaped as the schema says): loud, once per occurrence."""
        self.log.failure(
            "console of vm {vm_id}: {what} failed", failure, vm_id=self.vm_id, what=what
        )
        return False

    def _after_read(self, behind: Any) -> None:
        self._reading = False
        if not self.running:
            return
        self._examine_all()
        self._schedule(0 if behind is True else self._interval)

    def _publish(self, news: dict[str, Any]) -> None:
        """Hand a piece to the joined watchers; a reset makes every watcher join at it."""
        for watch in list(self.watchers):
            if news["reset"] and not watch.joined:
                watch.generation += 1
                watch.reading, watch.joined = False, True
            if watch.joined:
                watch.position = news["next"]
                self._deliver(watch, news)

    def _deliver(self, watch: ConsoleWatch, news: dict[str, Any]) -> None:
        try:
            watch.listener({"vm": str(self.vm_id), **news})
        except Exception:
            self.log.failure("console of vm {vm_id}: a watcher failed", vm_id=self.vm_id)

    # -- catching up ---------------------------------------------------------------------

    def _examine_all(self) -> None:
        for watch in list(self.watchers):
            self._examine(watch)

    def _examine(self, watch: ConsoleWatch) -> None:
        """Bring a watcher that has not joined one step closer to the stream."""
        if watch.joined or watch.reading or watch.stopped or not self.running:
            return
        place = self._place()
        if self.position.host is None or place is None or place.host_id != self.position.host:
            watch.joined = True  # the stream's next piece starts over (reset): share it
            return
        step, size = catch_up(
            watch.position, self.position.offset, self._chunk, probed=watch.probed
        )
        if step is Step.JOIN:
            watch.joined = True
        elif step is Step.READ:
            watch.reading = True
            generation = watch.generation
            d = self._call_agent(place, watch.position, size)
            d.addCallbacks(
                self._caught_up,
                self._catch_up_failed,
                callbackArgs=(watch, generation),
                errbackArgs=(watch, generation, place),
            )
            d.addErrback(self._broken, "catch-up")

    def _caught_up(self, answer: dict[str, Any], watch: ConsoleWatch, generation: int) -> None:
        if generation != watch.generation:
            return
        watch.reading, watch.probed = False, True
        reset = bool(answer.get("reset"))
        if answer["data"] or reset:
            self._deliver(watch, piece(answer, reset=reset))
        progressed = int(answer["next"]) != watch.position or reset
        watch.position = int(answer["next"])
        if progressed:  # else the log changed under it: try again after the stream's next read
            self._examine(watch)

    def _catch_up_failed(
        self, failure: Failure, watch: ConsoleWatch, generation: int, place: ConsolePlace
    ) -> None:
        if generation != watch.generation:
            return
        watch.reading = False  # examined again after the stream's next read
        if failure.check(RemoteError, LinkLost, defer.TimeoutError):
            self._troubled(place, failure.value)
        else:
            self._broken(failure, "catch-up")

    # -- the agent -----------------------------------------------------------------------

    def _call_agent(self, place: ConsolePlace, offset: int | None, size: int) -> Deferred:
        params: dict[str, Any] = {"vmID": str(self.vm_id), "size": size}
        if offset is not None:
            params["offset"] = offset
        return place.link.call(READ_VERB, params, timeout=self._timeout)

    def _troubled(self, place: ConsolePlace, error: BaseException) -> None:
        """Log a failed read once per outage, not once per tick."""
        reason = describe(place, error)
        if reason != self._trouble:
            self.log.warn(
                "console of vm {vm_id}: {reason}; retrying", vm_id=self.vm_id, reason=reason
            )
        self._trouble = reason

    def _recovered(self, place: ConsolePlace) -> None:
        if self._trouble is not None:
            self.log.info(
                "console of vm {vm_id}: reading from host {host} again",
                vm_id=self.vm_id,
                host=place.host_name,
            )
            self._trouble = None


def describe(place: ConsolePlace, error: BaseException) -> str:
    """:returns: why a console read on ``place`` failed, in one sentence."""
    if isinstance(error, RemoteError):
        return refusal(place, error)
    if isinstance(error, defer.TimeoutError):
        return f"host {place.host_name} did not answer {READ_VERB} in time"
    return f"host {place.host_name} is not reachable"


def refusal(place: ConsolePlace, error: RemoteError) -> str:
    """:returns: the sentence for an agent's refusal to read a console."""
    return (
        f"host {place.host_name} cannot read the console of VM {place.vm_name!r}: "
        f"{error.message} (code {error.code})"
    )


class ConsoleRelay:
    """
    Reads and streams VMs' consoles (see the module docstring).

    :param locate: finds a VM's host and link (``NotFound`` for an unknown VM).
    :param clock: times the polls.
    :param interval: seconds between two polls of a stream.
    :param chunk: the most bytes one poll reads.
    :param timeout: seconds an agent has to answer a read.
    """

    log = Logger()

    def __init__(
        self,
        locate: Locate,
        *,
        clock: IReactorTime,
        interval: float = DEFAULT_INTERVAL,
        chunk: int = DEFAULT_CHUNK,
        timeout: float = 10.0,
    ) -> None:
        self._locate = locate
        self._clock = clock
        self._interval = interval
        self._chunk = chunk
        self._timeout = timeout
        self.streams: dict[UUID, ConsoleStream] = {}

    async def read(
        self, vm_id: UUID, *, offset: int | None = None, size: int | None = None
    ) -> dict[str, Any]:
        """
        Read a VM's console once, from the host it runs on.

        :returns: the agent's answer (``data``, ``offset``, ``next``, ``size``, ``reset``) and
            ``host``, the host's id.
        :raises NotFound: for an unknown VM.
        :raises ConsoleUnavailable: when it runs nowhere, its host is unreachable or refuses.
        """
        place = self._locate(vm_id)
        if place.host_id is None:
            raise ConsoleUnavailable(f"VM {place.vm_name!r} is not running on any host")
        params: dict[str, Any] = {"vmID": str(vm_id)}
        if offset is not None:
            params["offset"] = offset
        if size is not None:
            params["size"] = size
        try:
            answer = await place.link.call(READ_VERB, params, timeout=self._timeout)
        except (RemoteError, LinkLost, defer.TimeoutError) as e:
            raise ConsoleUnavailable(describe(place, e)) from None
        keys = ("data", "offset", "next", "size", "reset")
        return {**{key: answer[key] for key in keys}, "host": str(place.host_id)}

    async def watch(
        self, vm_id: UUID, listener: Listener, *, offset: int | None = None
    ) -> ConsoleWatch:
        """
        Start watching a VM's console: ``listener({"vm", "data", "offset", "next", "reset"})``
        is called for each new piece, in order, until the returned watch is stopped.

        :param offset: where to start; None: where the stream stands (for a new stream, the
            current end of the log).
        :returns: the :class:`ConsoleWatch` (``start``: where its pieces start; 0 when the VM
            runs nowhere, its first piece then resets).
        :raises NotFound: for an unknown VM.
        :raises ConsoleUnavailable: when its agent refuses the first read of a new stream.
        """
        self._locate(vm_id)
        stream = self.streams.get(vm_id)
        if stream is None:
            stream = ConsoleStream(
                vm_id,
                locate=self._locate,
                clock=self._clock,
                interval=self._interval,
                chunk=self._chunk,
                timeout=self._timeout,
                on_idle=self._idle,
            )
            self.streams[vm_id] = stream
        return await stream.add(ConsoleWatch(vm_id, listener), offset)

    def vm_changed(self, vm_id: UUID, running: bool) -> None:
        """A VM's state changed; a watched VM that stopped starts over at its next run."""
        stream = self.streams.get(vm_id)
        if stream is not None and not running:
            stream.vm_stopped()

    def stop(self) -> None:
        """Stop every stream (the engine is stopping); watchers receive nothing more."""
        for stream in list(self.streams.values()):
            stream.stop()
        self.streams.clear()

    def _idle(self, stream: ConsoleStream) -> None:
        if self.streams.get(stream.vm_id) is stream:
            del self.streams[stream.vm_id]
