"""``HostLink``: the engine's connection to one host's agent, kept up with reconnection and backoff.

A ``ClientService`` (``twisted.application.internet``) owns the connection: it connects, and on
failure or loss waits ``backoffPolicy(initialDelay=0.5, maxDelay=10)`` and tries again. Its
``prepareConnection`` finishes each connection before anyone may use it: the WebSocket opening
handshake, ``Host.subscribe(["*"])`` and ``Host.getCapabilities``, all within
``connect_timeout``. An attempt that fails anywhere counts as failed and the backoff goes on.

The JSON-RPC side is :mod:`vdsmlike.client`'s: its WebSocket protocol and `AgentClient` (ids,
pending calls, events). On top of it the link adds a per-call timeout, typed errors
(`LinkDown`, `CallTimeout`), a heartbeat (``Host.ping2`` every ``heartbeat_interval``) and a
stream of `LinkEvent` to one listener, which the host monitor feeds to
:mod:`engine.decide.hoststate`. Time comes from an injected ``IReactorTime``.

The WebSocket protocol, factory and endpoint under the link (and a workaround for
``ClientService``'s handling of rejected connections) are in :mod:`engine.hostlink_transport`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from engine.decide.hoststate import DEFAULT_TIMING, HostEvent
from engine.interfaces import IHostLink
from vdsmlike.client import AgentClient, HandshakeFailed, LinkLost, RemoteError

from .hostlink_transport import TolerantEndpoint, agent_endpoint, link_factory, plain_reason

#: The events the link subscribes to: all of them.
ALL_EVENTS = ("*",)


class HostLinkError(Exception):
    """Base of the link's own errors."""


class LinkDown(HostLinkError, LinkLost):
    """The link is not connected, or the connection was lost before the answer came."""


class CallTimeout(HostLinkError, defer.TimeoutError):
    """No answer came within the call's timeout (the agent may still have acted)."""


class LinkEventKind(StrEnum):
    """What a `LinkEvent` reports; all but ``event`` are `HostEvent` names too."""

    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    LINK_LOST = "link_lost"
    HEARTBEAT_MISSED = "heartbeat_missed"
    HEARTBEAT_OK = "heartbeat_ok"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """
    One thing that happened on a link.

    :ivar kind: what happened.
    :ivar at: when (the link's clock).
    :ivar reason: a sentence for the audit log (empty for ``event``).
    :ivar caps: ``connected``: the agent's capabilities.
    :ivar attempt: ``connect_failed``: failed attempts in a row.
    :ivar retry_in: ``connect_failed``: seconds until the next attempt.
    :ivar missed: ``heartbeat_missed``: heartbeats missed in a row.
    :ivar event_id: ``event``: the agent's event id, e.g. ``|virt|VM_status|<vmId>``.
    :ivar params: ``event``: the event's params.
    """

    kind: LinkEventKind
    at: float
    reason: str = ""
    caps: dict[str, Any] | None = None
    attempt: int = 0
    retry_in: float | None = None
    missed: int = 0
    event_id: str | None = None
    params: Any = None

    @property
    def host_event(self) -> HostEvent | None:
        """The host state machine's input for this event, or None for an agent event."""
        return None if self.kind is LinkEventKind.EVENT else HostEvent(self.kind.value)


Listener = Callable[[LinkEvent], None]


def describe_failure(failure: Failure, timeout: float | None = None) -> str:
    """:returns: a one-line account of why a connect attempt or call failed, for the audit log."""
    error = failure.value
    if isinstance(error, HandshakeFailed):
        return f"handshake failed: {plain_reason(str(error))}"
    if isinstance(error, RemoteError):
        return f"agent answered error {error.code}: {error.message}"
    if isinstance(error, defer.TimeoutError):
        return f"no answer within {timeout:g} s" if timeout else "no answer in time"
    if isinstance(error, ConnectError | LinkLost):
        return plain_reason(str(error)) or type(error).__name__
    return f"{type(error).__name__}: {error}"


@implementer(IHostLink)
class HostLink(Service):
    """
    The engine's link to one agent (see the module docstring); a Twisted service.

    :param url: ``ws://host:port/jsonrpc`` (or ``wss://``).
    :param listener: called with each `LinkEvent`, in order, from its own reactor turn; what it
        raises is logged and ignored.
    :param reactor: connects (``IReactorTCP``) and, unless ``clock`` is given, keeps time.
    :param clock: the ``IReactorTime`` for retries, timeouts and heartbeats (a ``Clock`` in tests).
    :param token: sent as ``Authorization: Bearer <token>``.
    :param endpoint: connect through this endpoint instead of one built from ``url`` (tests).
    :param label: names the link in logs and reasons; defaults to the URL.
    :param retry_policy: seconds to wait before attempt *n* (ClientService's ``retryPolicy``);
        defaults to ``backoffPolicy(initialDelay=0.5, maxDelay=10.0)``.
    :param connect_timeout: seconds for TCP connect, and again for the handshake, subscription
        and capabilities of one attempt.
    :param call_timeout: default seconds a `call` waits for its answer.
    :param heartbeat_interval: seconds between heartbeats (from the start of one to the next).
    :param heartbeat_timeout: seconds a heartbeat waits before it counts as missed.
    :param heartbeat_verb: the verb that answers heartbeats (``Host.ping2``, or ``Host.getStats``).
    :param auto_ping_interval: seconds between WebSocket pings (autobahn; 0 = off); a connection
        whose pong does not come within ``auto_ping_timeout`` (default twice the interval) is
        dropped, and the link reconnects. txaio's batched timer floors these deadlines to whole
        seconds, so the interval must be at least 1 s and the timeout at least 2 s.
    :raises ValueError: for auto-ping figures below those.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        listener: Listener,
        *,
        reactor: Any,
        clock: IReactorTime | None = None,
        token: str | None = None,
        endpoint: IStreamClientEndpoint | None = None,
        label: str | None = None,
        retry_policy: Callable[[int], float] | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 60.0,
        heartbeat_interval: float = DEFAULT_TIMING.heartbeat_interval,
        heartbeat_timeout: float = DEFAULT_TIMING.heartbeat_timeout,
        heartbeat_verb: str = "Host.ping2",
        auto_ping_interval: float = 10.0,
        auto_ping_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.label = label or url
        self._listener = listener
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._heartbeat = (heartbeat_interval, heartbeat_timeout, heartbeat_verb)
        self._policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=10.0)
        self._factory = link_factory(
            url,
            token=token,
            clock=self._clock,
            ping_interval=auto_ping_interval,
            ping_timeout=auto_ping_timeout,
        )
        if endpoint is None:
            endpoint = agent_endpoint(reactor, self._factory, connect_timeout)
        self._service = ClientService(
            TolerantEndpoint(endpoint, self._attempt_failed),
            self._factory,
            retryPolicy=self._retry_delay,
            clock=self._clock,
            prepareConnection=self._prepare,
        )
        self._client: AgentClient | None = None
        self.capabilities: dict[str, Any] | None = None
        self._stopping = False
        self._failures = 0
        self._last_failure: str | None = None
        self._queue: deque[LinkEvent] = deque()
        self._drain_call: Any = None
        self._beat_call: Any = None
        self._missed = 0
        self._waiters: list[tuple[Deferred[dict[str, Any]], int | None]] = []

    # -- the service ----------------------------------------------------------------------

    def startService(self) -> None:
        """Start connecting; the link reconnects by itself until `stopService`."""
        super().startService()
        self._stopping = False
        self.log.info("{link}: connecting", link=self.label)
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop: no more events are reported (queued ones are dropped), pending calls fail with
        `LinkDown`, waiters of `when_connected` too.

        :returns: a Deferred firing once every connection is closed and nothing is scheduled.
        """
        super().stopService()
        self._stopping = True
        self._client = None
        for call in (self._drain_call, self._beat_call):
            if call is not None and call.active():
                call.cancel()
        self._drain_call = self._beat_call = None
        self._queue.clear()
        waiters, self._waiters = self._waiters, []
        for waiter, _ in waiters:
            waiter.errback(LinkDown(f"{self.label}: link stopped"))
        stopped = self._service.stopService()
        gone = [protocol.gone for protocol in list(self._factory.live)]
        return gatherResults([stopped, *gone]).addCallback(lambda _: None)

    # -- IHostLink ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the link is usable (see `IHostLink`)."""
        return self._client is not None and self._client.connected

    def call(self, method: str, params: Any = None, timeout: float | None = None) -> Deferred:
        """See `IHostLink.call`."""
        client = self._client
        if client is None or not client.connected:
            return fail(LinkDown(f"{self.label}: not connected"))
        limit = self._call_timeout if timeout is None else timeout
        d = client.call(method, params)
        d.addTimeout(limit, self._clock)
        d.addErrback(self._typed_error, method, limit)
        return d

    def when_connected(self, fail_after_failures: int | None = None) -> Deferred[dict[str, Any]]:
        """See `IHostLink.when_connected`."""
        if self.connected:
            return succeed(self.capabilities or {})
        if self._stopping or not self.running:
            return fail(LinkDown(f"{self.label}: link not running"))
        waiter: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append((waiter, fail_after_failures))
        return waiter

    def _typed_error(self, failure: Failure, method: str, limit: float) -> Failure:
        if failure.check(LinkLost) and not failure.check(LinkDown):
            raise LinkDown(f"{self.label}: {method}: {failure.value}")
        if failure.check(defer.TimeoutError) and not failure.check(CallTimeout):
            raise CallTimeout(f"{self.label}: {method}: no answer within {limit:g} s")
        return failure

    # -- connecting -----------------------------------------------------------------------

    def _prepare(self, protocol: Any) -> Deferred[None]:
        """ClientService's ``prepareConnection``: handshake, subscribe, read capabilities."""
        d = Deferred.fromCoroutine(self._open(protocol))
        d.addTimeout(self._connect_timeout, self._clock)
        d.addErrback(self._prepare_failed, protocol)
        return d

    async def _open(self, protocol: Any) -> None:
        early: list[tuple[str, Any]] = []
        client: AgentClient = await protocol.opened

        def relay(event_id: str, params: Any) -> None:
            if self._client is client:
                self._emit(LinkEventKind.EVENT, event_id=event_id, params=params)
            else:
                early.append((event_id, params))

        client.on_event(relay)
        await client.subscribe(ALL_EVENTS)
        caps = await client.call("Host.getCapabilities")
        if not isinstance(caps, dict):
            raise HandshakeFailed(f"Host.getCapabilities answered {type(caps).__name__}")
        self._connected(client, caps, protocol)
        for event_id, params in early:
            self._emit(LinkEventKind.EVENT, event_id=event_id, params=params)

    def _prepare_failed(self, failure: Failure, protocol: Any) -> Failure:
        if protocol.transport is not None:
            protocol.dropConnection(abort=True)
        if not self._stopping:
            self._last_failure = describe_failure(failure, self._connect_timeout)
        return failure

    def _attempt_failed(self, failure: Failure) -> Failure:
        if not self._stopping:
            self._last_failure = describe_failure(failure, self._connect_timeout)
        return failure

    def _retry_delay(self, attempt: int) -> float:
        """ClientService's retry policy: the configured one, reporting each failed attempt."""
        delay = self._policy(attempt)
        reason, self._last_failure = self._last_failure, None
        if reason is None:
            self.log.info("{link}: reconnecting in {delay:.2f} s", link=self.label, delay=delay)
            return delay
        self._failures += 1
        self.log.warn(
            "{link}: connect attempt {attempt} failed: {reason}; next in {delay:.2f} s",
            link=self.label,
            attempt=self._failures,
            reason=reason,
            delay=delay,
        )
        self._emit(
            LinkEventKind.CONNECT_FAILED, reason=reason, attempt=self._failures, retry_in=delay
        )
        return delay

    def _connected(self, client: AgentClient, caps: dict[str, Any], protocol: Any) -> None:
        self._client, self.capabilities = client, caps
        self._failures, self._missed = 0, 0
        client.when_closed().addCallback(lambda _: self._lost(client, protocol))
        self.log.info("{link}: connected", link=self.label)
        self._emit(LinkEventKind.CONNECTED, reason=f"connected to {self.url}", caps=caps)
        self._schedule_beat(client, self._clock.seconds())

    def _lost(self, client: AgentClient, protocol: Any) -> None:
        if self._client is not client:
            return
        self._client = None
        if self._beat_call is not None and self._beat_call.active():
            self._beat_call.cancel()
        self._beat_call = None
        if not self._stopping:
            reason = protocol.close_reason
            self.log.warn("{link}: link lost: {reason}", link=self.label, reason=reason)
            self._emit(LinkEventKind.LINK_LOST, reason=reason)

    # -- heartbeat ------------------------------------------------------------------------

    def _schedule_beat(self, client: AgentClient, started: float) -> None:
        if self._client is not client or self._stopping:
            return
        interval = self._heartbeat[0]
        delay = max(0.0, started + interval - self._clock.seconds())
        self._beat_call = self._clock.callLater(delay, self._beat, client)

    def _beat(self, client: AgentClient) -> None:
        self._beat_call = None
        started = self._clock.seconds()
        _, timeout, verb = self._heartbeat
        d = self.call(verb, timeout=timeout)
        d.addCallbacks(lambda _: self._beat_answered(), self._beat_failed)
        d.addBoth(lambda _: self._schedule_beat(client, started))

    def _beat_answered(self) -> None:
        if self._missed:
            reason = f"heartbeat answered after {self._missed} missed"
            self._missed = 0
            self._emit(LinkEventKind.HEARTBEAT_OK, reason=reason)

    def _beat_failed(self, failure: Failure) -> None:
        _, timeout, verb = self._heartbeat
        if failure.check(CallTimeout):
            self._missed += 1
            self.log.warn(
                "{link}: heartbeat {verb} missed ({missed} in a row)",
                link=self.label,
                verb=verb,
                missed=self._missed,
            )
            reason = f"{verb} not answered within {timeout:g} s"
            self._emit(LinkEventKind.HEARTBEAT_MISSED, reason=reason, missed=self._missed)
        elif failure.check(RemoteError):
            self.log.info(
                "{link}: heartbeat answered {error}", link=self.label, error=failure.value
            )
            self._beat_answered()
        elif not failure.check(LinkDown):
            self.log.failure("{link}: heartbeat failed", failure, link=self.label)

    # -- reporting ------------------------------------------------------------------------

    def _emit(self, kind: LinkEventKind, **fields: Any) -> None:
        """Queue an event; the queue drains in order from its own reactor turn."""
        if self._stopping:
            return
        self._queue.append(LinkEvent(kind, self._clock.seconds(), **fields))
        if self._drain_call is None:
            self._drain_call = self._clock.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drain_call = None
        while self._queue and not self._stopping:
            self._deliver(self._queue.popleft())

    def _deliver(self, event: LinkEvent) -> None:
        try:
            self._listener(event)
        except Exception:
            self.log.failure("{link}: listener failed on {kind}", link=self.label, kind=event.kind)
        self._wake_waiters(event)

    def _wake_waiters(self, event: LinkEvent) -> None:
        if event.kind is LinkEventKind.CONNECTED:
            waiters, self._waiters = self._waiters, []
            for waiter, _ in waiters:
                waiter.callback(event.caps or {})
        elif event.kind is LinkEventKind.CONNECT_FAILED:
            keep = []
            for waiter, left in self._waiters:
                if left is not None and left <= 1:
                    waiter.errback(LinkDown(f"{self.label}: {event.reason}"))
                else:
                    keep.append((waiter, None if left is None else left - 1))
            self._waiters = keep
