"""Mount the admin API on the engine's web site: ``make_resources`` and its settings.

The engine's shell (``engine/service.py``) owns the ``twisted.web`` ``Site`` and mounts what
this returns, one child per path segment::

    resources = make_resources(engine, store, reactor)
    root = Resource()
    for segment, resource in resources.items():
        root.putChild(segment.encode("ascii"), resource)
    site = Site(root)          # ws://<engine>/api is the admin API

and, when it stops, calls ``close_resources(resources)`` so the API stops listening to the
engine's changes. The ``""`` entry, the web console's static files
(:class:`engine.console.resource.ConsoleResource`), becomes the site's root, so the console is
``http://<engine>/`` and its API ``ws://<engine>/api``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from engine.console.resource import ConsoleResource
from engine.interfaces import IEngine, IStore

from . import schema as engine_schema
from .auth import AuthSettings
from .websocket import DEFAULT_MAX_MESSAGE_SIZE, EngineServerFactory

#: The path segment of the admin API.
API_SEGMENT = "api"

#: The path segment of the web console: empty, the site's root.
CONSOLE_SEGMENT = ""


@dataclass(frozen=True)
class ApiSettings:
    """
    The admin API's knobs.

    :ivar auth: session lifetime and login rate limits.
    :ivar max_message_size: bytes; larger requests are answered with -32600.
    :ivar auto_ping_interval: seconds between WebSocket pings (0 = off).
    :ivar auto_ping_timeout: seconds without a pong before a connection is dropped.
    :ivar validate: check every result and notification against the schema (tests).
    """

    auth: AuthSettings = field(default_factory=AuthSettings)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    auto_ping_interval: float = 30.0
    auto_ping_timeout: float = 60.0
    validate: bool = False


def settings_from(config: Any) -> ApiSettings:
    """
    The API's settings from the engine's configuration (``engine.config.EngineConfig``).

    :param config: the configuration, or None for the defaults.
    """
    ttl = getattr(config, "session_ttl", None)
    if ttl is None:
        return ApiSettings()
    return ApiSettings(auth=AuthSettings(session_ttl=float(ttl)))


class ApiResource(WebSocketResource):
    """autobahn's ``WebSocketResource`` for the admin API, keeping its factory at hand."""

    def __init__(self, factory: EngineServerFactory) -> None:
        super().__init__(factory)
        self.factory = factory


def make_factory(
    engine: IEngine,
    store: IStore,
    reactor: Any,
    *,
    settings: ApiSettings | None = None,
    clock: IReactorTime | None = None,
) -> EngineServerFactory:
    """
    The admin API's WebSocket factory (for tests, or another mount).

    :param engine: the engine's operations (``IEngine``).
    :param store: the store (``IStore``): accounts, sessions, statistics history.
    :param reactor: the reactor.
    :param settings: :class:`ApiSettings`; the defaults by default.
    :param clock: the time source of sessions and rate limits; the reactor by default.
    :raises vdsmlike.api.schema.SchemaFileError: if ``schema/engine.yml`` is malformed.
    """
    settings = settings or ApiSettings()
    return EngineServerFactory(
        engine,
        store,
        schema=engine_schema.load(strict=True),
        clock=clock if clock is not None else reactor,
        auth=settings.auth,
        max_message_size=settings.max_message_size,
        auto_ping_interval=settings.auto_ping_interval,
        auto_ping_timeout=settings.auto_ping_timeout,
        validate=settings.validate,
        reactor=reactor,
    )


def make_resources(
    engine: IEngine,
    store: IStore,
    reactor: Any,
    *,
    settings: ApiSettings | None = None,
    clock: IReactorTime | None = None,
) -> dict[str, IResource]:
    """
    The admin API's web resources, by path segment.

    :param settings: :class:`ApiSettings`; by default from the engine's configuration
        (``engine.config``: the session lifetime), else the defaults.
    :returns: ``{"api": ApiResource, "": ConsoleResource}``: the API (an autobahn
        ``WebSocketResource``) and the web console's files (the site's root, reading its
        files once, now); mount the others under the root with
        ``root.putChild(segment.encode("ascii"), resource)``.
    """
    if settings is None:
        settings = settings_from(getattr(engine, "config", None))
    factory = make_factory(engine, store, reactor, settings=settings, clock=clock)
    return {API_SEGMENT: ApiResource(factory), CONSOLE_SEGMENT: ConsoleResource()}


def close_resources(resources: dict[str, Any]) -> None:
    """Stop the API's resources listening to the engine (call when the engine stops)."""
    for resource in resources.values():
        if isinstance(resource, ApiResource):
            resource.factory.close()
