"""The engine's service tree: ``make_service(config, reactor)`` wires it all; nothing else does.

Children start in order and stop in reverse:

1. ``PostgresClusterService``: the private PostgreSQL cluster in the state dir (only without
   ``--db``);
2. ``StoreService``: connects and migrates the schema once the cluster is up;
3. :class:`EngineService`: once the store is ready, creates the admin account on the first start
   (its password printed once and written to ``<state-dir>/admin-password``, mode 0600), then
   starts the :class:`~engine.core.Engine` (which reconnects to every host);
4. the HTTP/WebSocket site, a ``StreamServerEndpointService`` listening on ``--listen``; once
   it listens and the engine has started, the URL is logged and written to
   ``<state-dir>/engine.url``.

The site's resources come from the admin API package: ``engine.api.site.make_resources(engine,
store, reactor)`` returns ``{path segment: Resource}`` (``"api"`` for the WebSocket API, ``""``
for the console's static files, which becomes the root). Until that package exists, the root
answers with a short page saying so.
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from .config import EngineConfig
from .core import Engine
from .interfaces import IEngine, IStore
from .store.cluster import PostgresCluster, PostgresClusterService
from .store.errors import DuplicateName
from .store.postgres import PostgresStore
from .store.ready import ReadyService
from .store.service import StoreService

ADMIN = "admin"
API_SITE_MODULE = "engine.api.site"


async def ensure_admin(store: IStore, config: EngineConfig, out: IO[str]) -> str | None:
    """
    Create the ``admin`` account unless it exists.

    :returns: the new password (also printed to ``out`` and written to the password file,
        mode 0600), or None when the account already existed.
    """
    password = secrets.token_urlsafe(18)
    try:
        await store.create_user(ADMIN, password)
    except DuplicateName:
        return None
    path = config.password_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(password + "\n")
    print(f"vdsmlike-engine: created account {ADMIN!r} with password {password} "
          f"(also in {path}; it is not shown again)", file=out, flush=True)
    return password


class EngineService(ReadyService):
    """
    Starts the :class:`Engine` once the store is ready, and stops it before the store closes.

    :param wait_for_store: returns a Deferred firing once the store is connected and migrated.
    :param out: where the first start prints the admin password.
    """

    log = Logger()

    def __init__(self, engine: Engine, config: EngineConfig, *,
                 wait_for_store: Callable[[], Deferred], out: IO[str] | None = None) -> None:
        super().__init__()
        self.engine = engine
        self._config = config
        self._wait_for_store = wait_for_store
        self._out = out

    def when_ready(self) -> Deferred:
        """A new Deferred firing with the engine once started, or failing with why not."""
        return self._readiness.when_ready()

    async def _start(self) -> Engine:
        await self._wait_for_store()
        await ensure_admin(self.engine.store, self._config, self._out or sys.stdout)
        await self.engine.start()
        return self.engine

    def _start_failed(self, failure: Failure) -> Failure:
        self.log.error("the engine cannot start: {error}", error=failure.getErrorMessage())
        return failure

    async def _stop(self) -> None:
        await self.engine.stop()


@implementer(IStreamServerEndpoint)
class _ReportingEndpoint:
    """Wraps a server endpoint to learn the port it listened on (port 0 picks one)."""

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        on_port: Callable[[Any], Any],
        on_failure: Callable[[Failure], Any],
    ) -> None:
        self._endpoint = endpoint
        self._on_port = on_port
        self._on_failure = on_failure

    def listen(self, factory: Any) -> Deferred:
        d = self._endpoint.listen(factory)
        d.addCallbacks(self._on_port, self._on_failure)
        return d


class SiteService(StreamServerEndpointService):
    """
    The HTTP/WebSocket site on ``config.listen_host:listen_port``.

    :ivar url: a Deferred firing with ``http://host:port/`` once listening (failing if it
        cannot listen).
    """

    log = Logger()

    def __init__(
        self, reactor: Any, config: EngineConfig, site: Site, *,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._on_stop = on_stop
        self.url: Deferred = Deferred()
        host = config.listen_host
        interface = host.replace(":", "\\:")
        endpoint = serverFromString(reactor, f"tcp:{config.listen_port}:interface={interface}")
        super().__init__(_ReportingEndpoint(endpoint, self._listening, self._failed), site)
        self.site = site

    def _listening(self, port: Any) -> Any:
        host = self._config.listen_host
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port.getHost().port}/"
        self.log.info("listening on {url}", url=url)
        self.url.callback(url)
        return port

    def stopService(self) -> Deferred:
        try:
            self._on_stop()
        except Exception:
            self.log.failure("closing the admin API failed")
        return super().stopService()

    def _failed(self, failure: Failure) -> Failure:
        if not self.url.called:
            self.url.errback(failure)
        return failure


class _Placeholder(Resource):
    """The root page while the admin API is missing (or failed to load)."""

    isLeaf = True

    def __init__(self, why: str) -> None:
        super().__init__()
        self._why = why

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"vdsmlike engine: running. {self._why}\n".encode()


class _WithoutQuery:
    """A request as the access log sees it: its URI without the query string."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = request.uri.split(b"?", 1)[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_line(timestamp: str, request: Any) -> str:
    """The combined access-log line, minus the query: ``/api?token=...`` must not be logged."""
    return combinedLogFormatter(timestamp, _WithoutQuery(request))


def make_site(engine: IEngine, store: IStore, reactor: Any) -> tuple[Site, Callable[[], None]]:
    """
    The site: the admin API's resources when ``engine.api.site`` exists, else a placeholder.

    :returns: the site, and what to call when the engine stops (the API's
        ``close_resources``, when it has one).
    """
    log = Logger()
    try:
        module = importlib.import_module(API_SITE_MODULE)
        resources = dict(module.make_resources(engine, store, reactor))
    except ModuleNotFoundError as e:
        if e.name not in (API_SITE_MODULE, "engine.api"):
            raise
        why = "The admin API and web console (engine.api.site) are not installed yet."
        return Site(_Placeholder(why), logFormatter=access_log_line), lambda: None
    except Exception as e:  # the engine keeps serving hosts without its API
        log.failure("the admin API failed to load")
        why = f"The admin API failed to load: {e}"
        return Site(_Placeholder(why), logFormatter=access_log_line), lambda: None
    close = getattr(module, "close_resources", None)
    mounted = dict(resources)
    root = resources.pop("", None) or Resource()
    for segment, resource in resources.items():
        root.putChild(segment.encode("ascii"), resource)
    site = Site(root, logFormatter=access_log_line)
    return site, (lambda: close(mounted)) if close is not None else (lambda: None)


class EngineTree(MultiService):
    """The engine's top service, with its parts at hand (see :func:`make_service`)."""

    cluster: PostgresClusterService | None
    store: PostgresStore
    store_service: StoreService
    engine: Engine
    engine_service: EngineService
    site: SiteService
    url: Deferred


def make_service(config: EngineConfig, reactor: Any, *, out: IO[str] | None = None) -> EngineTree:
    """
    Build the engine's service tree (see the module docstring).

    :param out: where the first start prints the admin password (stdout by default).
    :returns: the top service, with attributes ``cluster`` (or None), ``store``,
        ``store_service``, ``engine`` (the :class:`Engine`), ``engine_service``, ``site``
        (:class:`SiteService`) and ``url``: a Deferred firing with the engine's URL once it
        listens and has started (written to ``<state-dir>/engine.url`` then), failing if
        either fails.
    """
    os.makedirs(config.state_dir, exist_ok=True)
    top = EngineTree()
    top.cluster = None
    wait_for_db = None
    dsn = config.db
    if dsn is None:
        if os.geteuid() == 0:  # the server runs as "postgres": let it reach its directory
            os.chmod(config.state_dir, os.stat(config.state_dir).st_mode | 0o711)
        cluster = PostgresCluster(config.state_dir, reactor=reactor)
        cluster_service = PostgresClusterService(cluster, database=config.database)
        cluster_service.setServiceParent(top)
        top.cluster = cluster_service
        dsn, wait_for_db = cluster_service.dsn, cluster_service.when_ready
    top.store = PostgresStore(dsn, reactor=reactor, pool_size=config.pool_size)
    top.store_service = StoreService(top.store, wait_for=wait_for_db)
    top.store_service.setServiceParent(top)
    top.engine = Engine(top.store, config=config, reactor=reactor)
    top.engine_service = EngineService(top.engine, config, out=out,
                                       wait_for_store=top.store_service.when_ready)
    top.engine_service.setServiceParent(top)
    site, close_api = make_site(top.engine, top.store, reactor)
    top.site = SiteService(reactor, config, site, on_stop=close_api)
    top.site.setServiceParent(top)
    top.url = _announce(config, top.site.url, top.engine_service)
    return top


def _announce(config: EngineConfig, url: Deferred, engine: EngineService) -> Deferred:
    """Once listening and started: log the URL and write it to ``<state-dir>/engine.url``."""
    log = Logger()

    def ready(url: str) -> Deferred:
        def write(_: Any) -> str:
            with open(config.url_file, "w", encoding="utf-8") as f:
                f.write(url + "\n")
            log.info("engine ready at {url}", url=url)
            return url

        return engine.when_ready().addCallback(write)

    return url.addCallback(ready)
