"""The admin API's authentication: logins, tokens, expiry, logout and the login rate limit,
over real WebSocket connections with accounts and sessions in real PostgreSQL."""

from __future__ import annotations

import pytest
import pytest_twisted
from api_harness import ADMIN, PASSWORD, FakeEngine, start_api, until
from pg_harness import fake_clock, open_store
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.api.auth import (
    OPEN_VERBS,
    AuthSettings,
    ConnectionSession,
    LoginThrottle,
    login_keys,
)
from engine.api.schema import load
from engine.api.site import ApiSettings
from vdsmlike.client import LinkLost, RemoteError

TTL = 600.0


@pytest_twisted.async_yield_fixture
async def api(store):
    """The API on a ``FakeEngine`` and the real store, on the real clock."""
    server = await start_api(FakeEngine(), store)
    yield server
    await server.stop()


@pytest_twisted.async_yield_fixture
async def timed(pg_dsn):
    """The API, its store and its rate limit on one fake clock: (server, clock)."""
    clock = fake_clock()
    store = await open_store(pg_dsn, clock=clock)
    settings = ApiSettings(
        validate=True,
        auto_ping_interval=0,
        auth=AuthSettings(session_ttl=TTL, max_failures=3, window=60.0),
    )
    server = await start_api(FakeEngine(), store, settings=settings, clock=clock)
    yield server, clock
    await server.stop()
    store.close()
    assert clock.getDelayedCalls() == []


async def refused(d, code):
    """Await ``d``; :returns: its ``RemoteError``, which must have ``code``."""
    with pytest.raises(RemoteError) as caught:
        await d
    assert caught.value.code == code, caught.value
    return caught.value


@pytest_twisted.ensureDeferred
async def test_login(api):
    """A right password opens a session: a token, the user, an expiry, and the connection works."""
    client = await api.connect()
    answer = await client.call("Auth.login", {"user": ADMIN, "password": PASSWORD})
    assert answer["user"] == ADMIN and len(answer["token"]) >= 32
    assert answer["expires"].endswith("Z")
    assert await client.call("Hosts.list") == []
    assert (await api.store.lookup_session(answer["token"])).user_name == ADMIN
    logins = await api.store.list_events(event_type="USER_LOGIN")
    assert [e.details["user"] for e in logins] == [ADMIN]
    assert logins[0].details["address"] == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_unknown_user(api):
    """A wrong password and an unknown user get the same 403, and the connection stays out."""
    client = await api.connect()
    wrong = await refused(client.call("Auth.login", {"user": ADMIN, "password": "nope"}), 403)
    unknown = await refused(client.call("Auth.login", {"user": "eve", "password": "x"}), 403)
    assert wrong.message == unknown.message == "Login failed: wrong user name or password"
    error = await refused(client.call("Hosts.list"), 401)
    assert error.data == {"reason": "login_required"}
    failed = await api.store.list_events(event_type="USER_LOGIN_FAILED")
    assert sorted(e.details["user"] for e in failed) == [ADMIN, "eve"]
    assert await client.call("Engine.ping")


@pytest_twisted.ensureDeferred
async def test_every_guarded_verb_refuses_an_unauthenticated_connection(api):
    """Every verb but Auth.login, Auth.resume and Engine.ping answers 401, even with bad params."""
    guarded = sorted(load().schema.verbs() - OPEN_VERBS)
    client = await api.connect()
    results = await client.batch([(verb, {"bogus": 1}) for verb in guarded])
    for verb, result in zip(guarded, results, strict=True):
        assert isinstance(result, RemoteError), verb
        assert (result.code, result.data) == (401, {"reason": "login_required"}), verb
        assert result.message == "Not authenticated: log in first (Auth.login)"
    ping = await client.call("Engine.ping")
    assert set(ping) == {"version", "time"}
    assert [name for name, _, _ in api.engine.calls] == ["subscribe"]


@pytest_twisted.ensureDeferred
async def test_token_in_the_handshake(api):
    """A token given as ?token= or as a Bearer header authenticates the new connection."""
    token = (await api.login()).token
    by_query = await api.connect(query=f"?token={token}")
    by_header = await api.connect(token=token)
    assert await by_query.call("Hosts.list") == []
    assert await by_header.call("VMs.list") == []


@pytest_twisted.ensureDeferred
async def test_bad_handshake_token_is_refused_clearly(api):
    """A bad token in the handshake leaves the connection open and every verb says why."""
    client = await api.connect(token="not-a-token")
    error = await refused(client.call("Hosts.list"), 401)
    assert error.data == {"reason": "invalid_token"}
    assert "given when connecting is unknown or expired" in error.message
    await client.call("Auth.login", {"user": ADMIN, "password": PASSWORD})
    assert await client.call("Hosts.list") == []


@pytest_twisted.ensureDeferred
async def test_resume(api):
    """Auth.resume authenticates a connection with an earlier session's token."""
    token = (await api.login()).token
    client = await api.connect()
    session = await client.call("Auth.resume", {"token": token})
    assert session["user"] == ADMIN and set(session) == {"user", "expires"}
    assert await client.call("Jobs.list") == []
    other = await api.connect()
    error = await refused(other.call("Auth.resume", {"token": "x" * 43}), 401)
    assert error.data == {"reason": "invalid_token"}


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session_everywhere(api):
    """After Auth.logout the token fails everywhere; each connection in the session is told."""
    first = await api.login()
    second = await api.connect(token=first.token)
    await second.call("Engine.subscribe", {"patterns": ["*"]})
    assert await first.call("Auth.logout") is True
    for client in (first, second):
        error = await refused(client.call("Hosts.list"), 401)
        assert error.data == {"reason": "logged_out"}
        assert ("|engine|session|logged_out", "logged_out") in [
            (event_id, params["reason"]) for event_id, params in client.events
        ]
    assert api.factory.bus.patterns(api.protocols[-1]) == []
    third = await api.connect()
    await refused(third.call("Auth.resume", {"token": first.token}), 401)
    assert await api.store.lookup_session(first.token) is None


@pytest_twisted.ensureDeferred
async def test_expired_session(timed):
    """When the session expires the client is told, verbs answer 401, and the token is dead."""
    server, clock = timed
    client = await server.login()
    await client.call("Engine.subscribe", {"patterns": ["*"]})
    clock.advance(TTL - 1)
    assert await client.call("Hosts.list") == []
    clock.advance(2)
    await until(lambda: client.events, what="the expiry notification")
    assert client.events[-1][0] == "|engine|session|expired"
    error = await refused(client.call("Hosts.list"), 401)
    assert error.data == {"reason": "session_expired"}
    assert "expired" in error.message
    resumed = await server.connect()
    error = await refused(resumed.call("Auth.resume", {"token": client.token}), 401)
    assert error.data == {"reason": "invalid_token"}
    handshake = await server.connect(query=f"?token={client.token}")
    error = await refused(handshake.call("VMs.list"), 401)
    assert error.data == {"reason": "invalid_token"}
    await client.call("Auth.login", {"user": ADMIN, "password": PASSWORD})
    assert await client.call("Hosts.list") == []


@pytest_twisted.ensureDeferred
async def test_login_rate_limit(timed):
    """After 3 wrong passwords in a minute, logins are refused with 429 until one ages out."""
    server, clock = timed
    client = await server.connect()
    for _ in range(3):
        await refused(client.call("Auth.login", {"user": ADMIN, "password": "guess"}), 403)
        clock.advance(1)
    error = await refused(client.call("Auth.login", {"user": ADMIN, "password": PASSWORD}), 429)
    assert error.data == {"retry_after": 57.0}  # the first failure, at 0, counts until 60
    assert error.message == "Too many failed logins: try again in 57 s"
    assert len(await server.store.list_events(event_type="USER_LOGIN_FAILED")) == 3
    clock.advance(56)
    await refused(client.call("Auth.login", {"user": ADMIN, "password": PASSWORD}), 429)
    clock.advance(1)
    assert (await client.call("Auth.login", {"user": ADMIN, "password": PASSWORD}))["token"]
    for _ in range(2):  # a success forgot the failures: three more are allowed
        await refused(client.call("Auth.login", {"user": ADMIN, "password": "guess"}), 403)
    assert await client.call("Hosts.list") == []


@pytest_twisted.ensureDeferred
async def test_rate_limit_per_address(timed):
    """Wrong passwords for many users from one address close that address to every user."""
    server, _ = timed
    client = await server.connect()
    for user in ("u1", "u2", "u3"):
        await refused(client.call("Auth.login", {"user": user, "password": "guess"}), 403)
    await refused(client.call("Auth.login", {"user": ADMIN, "password": PASSWORD}), 429)
    other = await server.connect()
    await refused(other.call("Auth.login", {"user": "u4", "password": "x"}), 429)


def test_throttle_counts_per_user_and_per_address():
    """Failures count against the user and the address separately, in a sliding window."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, window=10.0)
    throttle.failed(login_keys("10.0.0.1", "admin"))
    clock.advance(4)
    throttle.failed(login_keys("10.0.0.2", "admin"))
    assert throttle.retry_after(login_keys("10.0.0.3", "admin")) == 6.0  # the user is closed
    assert throttle.retry_after(login_keys("10.0.0.1", "bob")) is None  # each address once
    throttle.failed(login_keys("10.0.0.1", "bob"))
    assert throttle.retry_after(login_keys("10.0.0.1", "carol")) == 6.0  # the address is closed
    clock.advance(6)
    assert throttle.retry_after(login_keys("10.0.0.3", "admin")) is None
    throttle.failed(login_keys("10.0.0.1", "bob"))
    assert throttle.retry_after(login_keys("10.0.0.1", "carol")) == 4.0
    throttle.succeeded(login_keys("10.0.0.1", "bob"))
    assert throttle.retry_after(login_keys("10.0.0.1", "carol")) is None


def test_throttle_forgets_old_keys_first():
    """At most ``max_tracked`` keys are remembered; the least recently failed go first."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=1, window=60.0, max_tracked=4)
    for n in range(10):
        throttle.failed(login_keys(f"10.0.0.{n}", f"user{n}"))
        clock.advance(1)
    assert throttle.tracked() == 4
    assert throttle.retry_after(login_keys("10.0.0.9", "nobody")) is not None
    assert throttle.retry_after(login_keys("10.0.0.0", "nobody")) is None



def test_connection_session_states():
    """A connection's session refuses with the reason it has none, and with session_expired
    once past its expiry, before its timer ends it."""
    from datetime import UTC, datetime

    from engine.api.errors import NotAuthenticated
    from engine.store.rows import Session

    clock = Clock()
    clock.advance(1000)
    state = ConnectionSession(clock)
    with pytest.raises(NotAuthenticated) as caught:
        state.require()
    assert caught.value.reason == "login_required"
    expires = datetime.fromtimestamp(1060, UTC)
    state.enter("tok", Session("admin", datetime.fromtimestamp(1000, UTC), expires))
    state.require()
    assert (state.user, state.seconds_left()) == ("admin", 60.0)
    clock.advance(60)
    with pytest.raises(NotAuthenticated) as caught:
        state.require()
    assert caught.value.reason == "session_expired" and state.token == "tok"
    state.leave("logged_out", "bye")
    with pytest.raises(NotAuthenticated) as caught:
        state.require()
    assert (caught.value.reason, caught.value.detail) == ("logged_out", "bye")


@pytest_twisted.ensureDeferred
async def test_client_gone_during_login(api):
    """A login whose client disconnects before the answer leaves no session state behind."""
    client = await api.connect()
    api.store.verify_password = _slowly(api.store.verify_password)
    login = client.call("Auth.login", {"user": ADMIN, "password": PASSWORD})
    await until(lambda: api.protocols[-1].in_flight == 1, what="the login in flight")
    api.protocols[-1].transport.abortConnection()
    with pytest.raises(LinkLost):
        await login
    await until(lambda: api.protocols[-1].in_flight == 0, what="the login's end")
    assert api.factory._sessions == {} and api.protocols[-1]._expiry is None


def _slowly(fn):
    """``fn``, answering 0.2 s later."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    async def slow(*args, **kwargs):
        await deferLater(reactor, 0.2, lambda: None)
        return await fn(*args, **kwargs)

    return lambda *args, **kwargs: defer.ensureDeferred(slow(*args, **kwargs))
