"""The WebSocket plumbing under :class:`~engine.hostlink.HostLink`: protocol, factory, endpoint.

:func:`link_factory` builds the autobahn client factory of one link (bearer token, auto-ping,
no handshake timeouts of autobahn's own: the link's ``prepareConnection`` times the whole
opening); its :class:`LinkProtocol` is :mod:`vdsmlike.client`'s JSON-RPC protocol that also
remembers why it closed and tells when it is gone. :func:`agent_endpoint` connects to the
agent's address as it is, or through name resolution, with TLS for ``wss://``.

A workaround lives here: Twisted 26.10's ``ClientService`` has no transition for the loss of a
connection its ``prepareConnection`` rejected, so every failed handshake would log a
``NoTransition`` traceback. :class:`TolerantEndpoint` wraps the agent's endpoint to absorb
exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from automat import NoTransition
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdsmlike.client import _AgentClientProtocol


class LinkProtocol(_AgentClientProtocol):
    """`vdsmlike.client`'s protocol, remembering why it closed and telling when it is gone."""

    factory: LinkFactory

    def __init__(self) -> None:
        super().__init__()
        self.close_reason = "connection closed"
        self.gone: Deferred[None] = Deferred()

    def processHandshake(self) -> None:
        """
        Read the server's handshake answer; an unreadable one fails the handshake.

        autobahn 26.10 decodes the raw answer as UTF-8 (to log it) before parsing it, so a
        server answering binary junk made it raise out of ``dataReceived``.
        """
        try:
            super().processHandshake()
        except Exception as e:
            self.failHandshake(f"unreadable handshake answer ({type(e).__name__}: {e})")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_reason = plain_reason(reason or f"connection closed (code {code})")
        super().onClose(wasClean, code, reason)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        try:
            super().connectionLost(reason)
        finally:
            self.factory.live.discard(self)
            self.gone.callback(None)


class LinkFactory(WebSocketClientFactory):
    """Builds `LinkProtocol` connections and remembers the ones still open."""

    protocol = LinkProtocol  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live: set[LinkProtocol] = set()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if isinstance(protocol, LinkProtocol):
            self.live.add(protocol)
        return protocol


@implementer(IProtocol)
class _TolerantProtocol:
    """Relays to ClientService's protocol proxy; absorbs its ``NoTransition`` on a late loss."""

    log = Logger()

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def makeConnection(self, transport: Any) -> None:
        self.proxy.makeConnection(transport)

    def connectionMade(self) -> None:
        self.proxy.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self.proxy.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        try:
            self.proxy.connectionLost(reason)
        except NoTransition:
            # A connection that prepareConnection rejected (or that was cancelled by a stop)
            # is gone: ClientService has already counted it as failed.
            self.log.debug("loss of a rejected connection absorbed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy, name)


@implementer(IStreamClientEndpoint)
class TolerantEndpoint:
    """
    Wraps the agent's endpoint for ClientService: the transport talks to a `_TolerantProtocol`
    (ClientService still gets its own proxy back), and a failed TCP connect is reported to
    ``on_failure`` before ClientService sees it.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, on_failure: Callable[[Failure], Any]):
        self._endpoint = endpoint
        self._on_failure = on_failure

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        d = self._endpoint.connect(_TolerantFactory(protocolFactory))
        d.addCallbacks(lambda tolerant: tolerant.proxy, self._on_failure)
        return d


@implementer(IProtocolFactory)
class _TolerantFactory:
    """Builds `_TolerantProtocol` around what ClientService's factory builds."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def buildProtocol(self, addr: Any) -> _TolerantProtocol | None:
        proxy = self._factory.buildProtocol(addr)
        return None if proxy is None else _TolerantProtocol(proxy)

    def doStart(self) -> None:
        self._factory.doStart()

    def doStop(self) -> None:
        self._factory.doStop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)


_UNCLEAN = re.compile(r'^connection was closed uncleanly \("(.*)"\)$', re.DOTALL)


def plain_reason(reason: str) -> str:
    """:returns: autobahn's close reason without its ``closed uncleanly ("...")`` wrapping."""
    match = _UNCLEAN.match(reason)
    return match.group(1) if match else reason


def link_factory(
    url: str,
    *,
    token: str | None,
    clock: IReactorTime,
    ping_interval: float,
    ping_timeout: float | None,
) -> LinkFactory:
    """
    The WebSocket client factory of one link.

    :param token: sent as ``Authorization: Bearer <token>``.
    :param ping_interval: seconds between WebSocket pings (0 = off).
    :param ping_timeout: seconds a pong may take; None: twice the interval.
    :raises ValueError: for an interval below 1 s or a timeout below 2 s (txaio's batched
        timer floors these deadlines to whole seconds).
    """
    ping_timeout = (ping_timeout or 2 * ping_interval) if ping_interval else 0
    if ping_interval and (ping_interval < 1 or ping_timeout < 2):
        raise ValueError(
            f"auto-ping needs an interval of at least 1 s and a timeout of at least 2 s, "
            f"got {ping_interval:g} s and {ping_timeout:g} s"
        )
    headers = {"Authorization": f"Bearer {token}"} if token else None
    factory = LinkFactory(url, headers=headers, reactor=clock)
    factory.setProtocolOptions(
        openHandshakeTimeout=0,  # prepareConnection's own timeout covers the handshake
        closeHandshakeTimeout=0,
        autoPingInterval=ping_interval,
        autoPingTimeout=ping_timeout,
    )
    return factory


def agent_endpoint(reactor: Any, factory: LinkFactory, timeout: float) -> IStreamClientEndpoint:
    """TCP to an address as it is, or through name resolution (happy eyeballs) to a name."""
    host = factory.host.strip("[]")
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, factory.port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, factory.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, factory.port, timeout=timeout)
    if factory.isSecure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
    return endpoint
