"""Shared test helpers: a tiny binder, synchronous Deferred results."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from vdsmlike.api.errors import InvalidParams, MethodNotFound

# verb -> parameter names, in positional order.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "Host.ping2": (),
    "Host.subscribe": ("patterns",),
    "Host.unsubscribe": ("patterns",),
    "Test.echo": ("value",),
    "Test.add": ("a", "b"),
    "Test.slow": ("seconds", "value"),
    "Test.fail": ("kind",),
    "Test.none": (),
    "Test.unencodable": (),
    "Test.later": (),
    "Test.coro": ("value",),
    "Test.gate": (),
}


def fake_bind(verb: str, params: Any) -> dict[str, Any]:
    """Bind dict or list params to the names in SIGNATURES, as the schema binder does."""
    names = SIGNATURES.get(verb)
    if names is None:
        raise MethodNotFound(verb)
    if isinstance(params, list):
        if len(params) > len(names):
            raise InvalidParams(f"{verb} takes at most {len(names)} params")
        return dict(zip(names, params, strict=False))
    unknown = set(params) - set(names)
    if unknown:
        raise InvalidParams(f"unknown params: {sorted(unknown)}")
    return dict(params)


def result_of(d: Deferred[Any]) -> Any:
    """:returns: the result of a Deferred that has already fired (raises its failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
