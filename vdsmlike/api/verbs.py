"""The verb registry: ``@verb("Host.ping2")`` marks a handler; the schema is checked against it.

Handlers are methods of API objects (``HostApi``, ``VmApi``); ``collect(obj)`` gathers the
decorated methods of one object as ``{verb name: bound method}``. A handler takes the verb's
params as keyword arguments (already validated against the schema, defaults filled in) and
returns a value or a Deferred.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_VERB_ATTR = "_vdsmlike_verb"


def verb(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """
    Mark a method as the handler of the verb ``name`` (``Namespace.verbName``).

    :param name: the verb's wire name, exactly as in ``schema/agent.yml``.
    """
    if "." not in name:
        raise ValueError(f"verb name needs a namespace: {name!r}")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _VERB_ATTR, name)
        return fn

    return mark


def collect(*api_objects: object) -> dict[str, Callable[..., Any]]:
    """
    Gather the ``@verb`` handlers of each object.

    :returns: ``{verb name: bound method}``.
    :raises ValueError: if two handlers claim one verb.
    """
    handlers: dict[str, Callable[..., Any]] = {}
    for obj in api_objects:
        for attr in dir(type(obj)):
            fn = getattr(type(obj), attr, None)
            name = getattr(fn, _VERB_ATTR, None)
            if name is None:
                continue
            if name in handlers:
                raise ValueError(f"two handlers for {name}")
            handlers[name] = getattr(obj, attr)
    return handlers
