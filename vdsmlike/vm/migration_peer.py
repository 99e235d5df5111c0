"""The source agent's JSON-RPC link to a migration's destination agent, over WebSocket.

A thin :class:`~vdsmlike.interfaces.IAgentConnector` over :func:`vdsmlike.client.connect`: one
connection per migration, opened when it starts and closed when it ends.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from .. import client
from ..interfaces import IAgentConnector


@implementer(IAgentConnector)
class WebSocketAgentConnector:
    """
    Connects to agents with :class:`vdsmlike.client.AgentClient`.

    :param timeout: seconds for TCP connect plus the WebSocket handshake.
    """

    def __init__(self, reactor: Any, *, timeout: float = 30.0) -> None:
        self._reactor = reactor
        self._timeout = timeout

    def connect(self, url: str, token: str | None) -> Deferred[client.AgentClient]:
        """:returns: a Deferred firing with a connected client; failing as ``connect`` does."""
        return client.connect(self._reactor, url, token=token, timeout=self._timeout)
