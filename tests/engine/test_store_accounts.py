"""Users and sessions: scrypt hashes (pure) and the store's accounts on real PostgreSQL."""

from __future__ import annotations

import pytest
import pytest_twisted
from pg_harness import fake_clock, open_store

from engine.store.errors import DuplicateName, NotFound
from engine.store.passwords import ScryptParams, hash_password, token_hash, verify_password

CHEAP = ScryptParams(n=2**10)


def test_hash_format_and_verify():
    """A hash carries scheme, parameters and salt, and verifies only its own password."""
    encoded = hash_password("s3cret", CHEAP)
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret!", encoded)
    assert hash_password("s3cret", CHEAP) != encoded  # a fresh salt every time


def test_malformed_hashes_never_verify():
    """A malformed hash or another scheme never verifies, and never raises."""
    for bad in ("", "plain", "md5$1$2$3$4$5", "scrypt$x$8$1$AA==$AA==", "scrypt$3$8$1$AA==$AA=="):
        assert not verify_password("anything", bad)


@pytest_twisted.ensureDeferred
async def test_create_and_verify(store):
    """A created user verifies with their password, and not with another or another name."""
    user = await store.create_user("admin", "correct horse")
    assert user.name == "admin" and user.created is not None
    assert await store.verify_password("admin", "correct horse") == user
    assert await store.verify_password("admin", "wrong") is None
    assert await store.verify_password("nobody", "correct horse") is None


@pytest_twisted.ensureDeferred
async def test_password_is_stored_hashed(store):
    """The users table holds a salted scrypt hash, never the password."""
    await store.create_user("admin", "correct horse")
    row = await store.transaction(
        lambda tx: tx.sql.fetch_one("SELECT password_hash FROM users WHERE name = 'admin'")
    )
    assert row["password_hash"].startswith("scrypt$")
    assert "correct horse" not in row["password_hash"]


@pytest_twisted.ensureDeferred
async def test_duplicate_user_and_set_password(store):
    """A taken user name fails with ``DuplicateName``; a new password replaces the old one."""
    await store.create_user("admin", "one")
    with pytest.raises(DuplicateName) as caught:
        await store.create_user("admin", "two")
    assert caught.value.kind == "user"
    await store.set_password("admin", "three")
    assert await store.verify_password("admin", "one") is None
    assert await store.verify_password("admin", "three") is not None
    with pytest.raises(NotFound):
        await store.set_password("nobody", "x")


@pytest_twisted.ensureDeferred
async def test_sessions(store):
    """A session's token finds it until it is expired; only the token's hash is stored."""
    await store.create_user("admin", "pw")
    token, session = await store.create_session("admin", ttl=3600)
    assert session.user_name == "admin"
    assert await store.lookup_session(token) == session
    assert await store.lookup_session("not-a-token") is None
    stored = await store.transaction(
        lambda tx: tx.sql.fetch_all("SELECT token_hash FROM sessions")
    )
    assert stored == [{"token_hash": token_hash(token)}]
    await store.expire_session(token)
    assert await store.lookup_session(token) is None
    await store.expire_session(token)  # ending it again is fine


@pytest_twisted.ensureDeferred
async def test_session_for_unknown_user(store):
    """A session cannot be opened for a user that does not exist."""
    with pytest.raises(NotFound) as caught:
        await store.create_session("nobody", ttl=60)
    assert caught.value.kind == "user"


@pytest_twisted.ensureDeferred
async def test_sessions_expire(store):
    """A session stops working at its expiry time, and purging deletes only expired ones."""
    clock = fake_clock()
    timed = await open_store(store.dsn, clock=clock)
    try:
        await timed.create_user("admin", "pw")
        short, _ = await timed.create_session("admin", ttl=60)
        long, _ = await timed.create_session("admin", ttl=3600)
        clock.advance(59)
        assert await timed.lookup_session(short) is not None
        clock.advance(1)
        assert await timed.lookup_session(short) is None
        assert await timed.purge_sessions() == 1
        assert await timed.lookup_session(long) is not None
    finally:
        timed.close()
