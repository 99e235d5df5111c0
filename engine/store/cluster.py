"""A private PostgreSQL cluster in the engine's state dir, run with ``initdb`` and ``pg_ctl``.

The embedded default for a one-machine setup: without ``--db``, the engine keeps its database in
``<state-dir>/postgres/`` and starts and stops the server with itself. Layout::

    <state-dir>/postgres/           owned by the server user, mode 0700
        data/                       the cluster (initdb on first start)
        run/.s.PGSQL.<port>         the only way in: a Unix socket, no TCP
        server.log                  the server's own log

PostgreSQL refuses to run as root, so when the engine runs as root the server runs as the
``postgres`` system user, and the directory above is chowned to it. Authentication is ``trust``
on that socket: only the server user and root can enter its 0700 directory.

Every command runs as a Twisted child process; nothing here blocks the reactor.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres

from .errors import ClusterError
from .ready import ReadyService

SUPERUSER = "postgres"
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, NUL included

#: Settings for a throwaway cluster (tests, demos): no fsync, so data may not survive a crash.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def find_server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest.

    :returns: the directory, or None when PostgreSQL's server binaries are not installed.
    """
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_major, reverse=True)
    return debian[0].parent if debian else None


def _major(pg_ctl: Path) -> int:
    version = pg_ctl.parent.parent.name
    return int(version) if version.isdigit() else 0


@dataclass(frozen=True)
class CommandResult:
    """How a child process ended and what it printed."""

    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def describe(self) -> str:
        """One line naming the command and its exit code, then whatever it printed."""
        text = (self.err.strip() or self.out.strip())[-2000:]
        return f"{shlex.join(self.argv)} exited with {self.code}: {text}"


class _Collector(ProcessProtocol):
    """Gathers a child's output and fires ``done`` with a :class:`CommandResult`."""

    def __init__(self, argv: Sequence[str], done: Deferred) -> None:
        self._argv = tuple(argv)
        self._done = done
        self._out: list[bytes] = []
        self._err: list[bytes] = []

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone):
            code = 0
        elif isinstance(value, ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else 128 + (value.signal or 0)
        else:
            code = -1
        out = b"".join(self._out).decode("utf-8", "replace")
        err = b"".join(self._err).decode("utf-8", "replace")
        self._done.callback(CommandResult(self._argv, code, out, err))


def run_command(
    reactor: Any, argv: Sequence[str], *, user: pwd.struct_passwd | None = None
) -> Deferred:
    """Run ``argv`` as a child process, as ``user`` when given (the caller must be root then).

    :returns: a Deferred firing with a :class:`CommandResult` whatever the exit code; it fails
        only when the process cannot be spawned.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    ids: dict[str, int] = {}
    if user is not None:
        env["HOME"] = user.pw_dir
        ids = {"uid": user.pw_uid, "gid": user.pw_gid}
    done: Deferred = Deferred()
    reactor.spawnProcess(
        _Collector(argv, done), argv[0], list(argv), env=env, path="/", **ids
    )
    return done


class PostgresCluster:
    """A PostgreSQL cluster of our own under ``<state_dir>/postgres``.

    :param state_dir: the engine's state directory; it must exist and, when running as root, be
        reachable (every ancestor searchable) by the server user.
    :param reactor: an ``IReactorProcess`` to run ``initdb`` and ``pg_ctl``.
    :param user: the system user the server runs as; default ``postgres`` when running as root,
        else the current user.
    :param port: only names the socket file (``.s.PGSQL.<port>``); no TCP port is opened.
    :param settings: extra server settings (``-c name=value``) at every start.
    :param durable: False for a throwaway cluster: ``initdb --no-sync`` and no fsync.
    :param bin_dir: where ``initdb`` and ``pg_ctl`` live; found on PATH by default.
    """

    log = Logger()

    def __init__(
        self,
        state_dir: Path | str,
        *,
        reactor: Any,
        user: str | None = None,
        port: int = 5432,
        settings: Mapping[str, str] | None = None,
        durable: bool = True,
        bin_dir: Path | None = None,
    ) -> None:
        self.base = Path(state_dir).absolute() / "postgres"
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log_file = self.base / "server.log"
        self.port = port
        self._reactor = reactor
        self._user_name = user if user is not None else (SUPERUSER if os.geteuid() == 0 else None)
        self._settings = dict(settings or {})
        if not durable:
            self._settings = {**FAST_SETTINGS, **self._settings}
        self._durable = durable
        self._bin_dir = bin_dir

    def dsn(self, dbname: str = "postgres") -> str:
        """The libpq connection string for ``dbname`` on this cluster's socket."""
        return make_dsn(
            host=str(self.socket_dir), port=str(self.port), user=SUPERUSER, dbname=dbname
        )

    @property
    def initialised(self) -> bool:
        """True once ``initdb`` has created the cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    async def start(self) -> None:
        """Initialise the cluster if needed, then start the server and wait until it accepts
        connections. A server already running on this data dir (left by an engine that died)
        is adopted as it is.

        :raises ClusterError: binaries missing, a directory the server user cannot reach,
            ``initdb`` or ``pg_ctl start`` failing (with the tail of the server log).
        """
        self._check_socket_path()
        if not self.initialised:
            await self.initialise()
        if await self.running():
            self.log.warn("PostgreSQL already running in {dir}; adopting it", dir=self.data_dir)
            return
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.socket_dir)
        options = ["-k", str(self.socket_dir), "-p", str(self.port), "-c", "listen_addresses="]
        for name, value in sorted(self._settings.items()):
            options += ["-c", f"{name}={value}"]
        result = await self._pg_ctl(
            "start", "-w", "-t", "60", "-l", str(self.log_file), "-o", shlex.join(options)
        )
        if result.code != 0:
            raise ClusterError(f"{result.describe()}\n{self._log_tail()}")
        self.log.info("PostgreSQL started in {dir}", dir=self.data_dir)

    async def stop(self) -> None:
        """Stop the server (``fast`` mode: open transactions are rolled back), waiting until it
        has exited. Stopping a server that is not running succeeds.

        :raises ClusterError: ``pg_ctl stop`` failed.
        """
        if not self.initialised or not await self.running():
            return
        result = await self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
        if result.code != 0:
            raise ClusterError(result.describe())
        self.log.info("PostgreSQL stopped in {dir}", dir=self.data_dir)

    async def running(self) -> bool:
        """Whether a server is running on this data dir (``pg_ctl status``)."""
        result = await self._pg_ctl("status")
        return result.code == 0

    async def create_database(self, name: str, *, template: str | None = None) -> None:
        """Create a database, a copy of ``template`` if given (quick for a small template).

        :raises ClusterError: it exists, or the template is in use.
        """
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        await self._admin(statement)

    async def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its clients; dropping a missing one succeeds."""
        await self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    async def ensure_database(self, name: str) -> bool:
        """Create the database unless it exists.

        :returns: True if it was created now.
        """
        rows = await self._admin(
            "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": name}, query=True
        )
        if rows:
            return False
        await self.create_database(name)
        self.log.info("created database {name}", name=name)
        return True

    async def _admin(self, statement: Any, params: Any = None, *, query: bool = False) -> Any:
        """Run one statement outside any transaction, connected to the ``postgres`` database."""
        connection = txpostgres.Connection(self._reactor)
        try:
            await connection.connect(self.dsn())
        except psycopg2.Error as e:
            if connection._connection is not None:
                connection._connection.close()
            raise ClusterError(f"cannot connect to {self.socket_dir}: {e}") from e
        try:
            if query:
                return await connection.runQuery(statement, params)
            return await connection.runOperation(statement, params)
        except psycopg2.Error as e:
            raise ClusterError(str(e).strip()) from e
        finally:
            connection.close()

    async def initialise(self) -> None:
        """Create the directories and run ``initdb`` (superuser ``postgres``, UTF-8, ``trust``).

        :raises ClusterError: the binaries are missing, or ``initdb`` failed.
        """
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._chown(self.base)
        self._check_reachable()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} exists, is not empty and holds no cluster")
        argv = [
            str(self._binary("initdb")), "-D", str(self.data_dir), "-U", SUPERUSER,
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions",
        ]
        if not self._durable:
            argv.append("--no-sync")
        self.log.info("initialising a PostgreSQL cluster in {dir}", dir=self.data_dir)
        result = await run_command(self._reactor, argv, user=self._server_user())
        if result.code != 0:
            raise ClusterError(result.describe())

    async def _pg_ctl(self, *args: str) -> Any:
        argv = [str(self._binary("pg_ctl")), "-D", str(self.data_dir), *args]
        return await run_command(self._reactor, argv, user=self._server_user())

    def _binary(self, name: str) -> Path:
        bin_dir = self._bin_dir or find_server_binaries()
        if bin_dir is None or not (bin_dir / name).exists():
            raise ClusterError(f"PostgreSQL server binary {name!r} not found (PATH or {bin_dir})")
        return bin_dir / name

    def _server_user(self) -> pwd.struct_passwd | None:
        """The user to switch to, or None to run as ourselves."""
        if self._user_name is None:
            return None
        try:
            entry = pwd.getpwnam(self._user_name)
        except KeyError:
            raise ClusterError(f"no system user {self._user_name!r} to run PostgreSQL") from None
        return None if entry.pw_uid == os.geteuid() else entry

    def _chown(self, path: Path) -> None:
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _check_reachable(self) -> None:
        """Fail clearly when the server user cannot search every ancestor of the data dir."""
        user = self._server_user()
        if user is None:
            return
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
        for directory in reversed(self.base.parents):
            st = directory.stat()
            if st.st_uid == user.pw_uid:
                bit = stat.S_IXUSR
            elif st.st_gid in groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                raise ClusterError(
                    f"user {user.pw_name!r} cannot reach {self.base}: {directory} is mode "
                    f"{stat.filemode(st.st_mode)}; make it searchable or use another state dir"
                )

    def _check_socket_path(self) -> None:
        path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
            raise ClusterError(f"socket path {path} is longer than {_SOCKET_PATH_MAX} bytes")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PostgresClusterService(ReadyService):
    """Starts a :class:`PostgresCluster` with the engine (creating its database on first start)
    and stops it when the engine stops.

    Put it first in the engine's ``MultiService``, so that it is stopped last, and give
    :class:`~engine.store.service.StoreService` ``wait_for=service.when_ready``.

    :param database: the engine's database in the cluster, created if missing.
    """

    log = Logger()

    def __init__(self, cluster: PostgresCluster, *, database: str = "vdsmlike") -> None:
        super().__init__()
        self.cluster = cluster
        self.database = database

    @property
    def dsn(self) -> str:
        """The connection string of the engine's database."""
        return self.cluster.dsn(self.database)

    def when_ready(self) -> Deferred:
        """A new Deferred firing with the DSN once the server accepts connections and the
        database exists, or failing with :class:`~engine.store.errors.ClusterError`."""
        return self._readiness.when_ready()

    async def _start(self) -> str:
        await self.cluster.start()
        await self.cluster.ensure_database(self.database)
        return self.dsn

    def _start_failed(self, failure: Failure) -> Failure:
        if failure.check(ClusterError):  # typed and self-explanatory: no traceback
            self.log.error("cannot start PostgreSQL: {error}", error=failure.value)
        else:
            self.log.failure("cannot start PostgreSQL in {dir}", failure,
                             dir=self.cluster.data_dir)
        return failure

    async def _stop(self) -> None:
        await self.cluster.stop()
