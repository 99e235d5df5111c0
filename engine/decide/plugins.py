"""Loading scheduler filters and weights by name with stevedore.

Filters and weights are plugins: classes registered under the entry-point namespaces
:data:`FILTER_NAMESPACE` and :data:`WEIGHT_NAMESPACE` and instantiated with no arguments. A
third-party package adds its own next to ours::

    [options.entry_points]
    vdsmlike.engine.filters =
        gpu = mypkg.sched:GpuFilter
    vdsmlike.engine.weights =
        rack_spread = mypkg.sched:RackSpreadWeight

A policy names the plugins it uses; :func:`units_for` imports only those (stevedore's
``NamedExtensionManager(..., name_order=True)``), in the policy's order, and keeps them for the
next decision. A name that is not installed, a plugin that fails to import, or an object that is
not a filter (or weight) is a :class:`PluginError` at once, never a silently smaller policy.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from stevedore.extension import ExtensionManager
from stevedore.named import NamedExtensionManager

from .filters import HostFilter
from .policies import Policy, PolicyError, effective_filters
from .weights import HostWeight

#: Where filter plugins register.
FILTER_NAMESPACE = "vdsmlike.engine.filters"
#: Where weight plugins register.
WEIGHT_NAMESPACE = "vdsmlike.engine.weights"

_KIND = {FILTER_NAMESPACE: ("filter", "refusal"), WEIGHT_NAMESPACE: ("weight", "weigh")}


class PluginError(LookupError):
    """A scheduler plugin that is unknown, fails to load, or has the wrong shape."""


@dataclass(frozen=True, slots=True)
class PolicyUnits:
    """
    A policy's plugins, loaded: what :func:`engine.decide.scheduler.schedule` runs.

    :ivar filters: filter objects, in the order they run.
    :ivar weights: ``(weight object, factor)`` pairs.
    """

    filters: tuple[HostFilter, ...]
    weights: tuple[tuple[HostWeight, int], ...]


def installed(namespace: str) -> list[str]:
    """:returns: the sorted names registered under ``namespace`` (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=namespace)})


def _missing(namespace: str) -> Any:
    kind, _method = _KIND[namespace]

    def callback(names: Iterable[str]) -> None:
        wanted = ", ".join(repr(n) for n in sorted(names))
        known = ", ".join(installed(namespace)) or "none"
        raise PluginError(f"unknown scheduler {kind} {wanted} (installed: {known})")

    return callback


def _failed(namespace: str) -> Any:
    kind, _method = _KIND[namespace]

    def callback(manager: Any, entrypoint: Any, error: BaseException) -> None:
        raise PluginError(
            f"scheduler {kind} {entrypoint.name!r} failed to load: {error!r}"
        ) from error

    return callback


def _checked(namespace: str, name: str, obj: object) -> object:
    kind, method = _KIND[namespace]
    if not callable(getattr(obj, method, None)):
        raise PluginError(f"scheduler {kind} {name!r} has no {method}() method: {obj!r}")
    own = getattr(obj, "name", None)
    if own != name:
        raise PluginError(
            f"scheduler {kind} registered as {name!r} calls itself {own!r}; the names must match"
        )
    return obj


@functools.lru_cache(maxsize=64)
def _load(namespace: str, names: tuple[str, ...]) -> tuple[Any, ...]:
    if len(set(names)) != len(names):
        kind, _method = _KIND[namespace]
        raise PluginError(f"scheduler {kind}s named twice in {list(names)}")
    if not names:
        return ()
    manager = NamedExtensionManager(
        namespace,
        list(names),
        name_order=True,
        invoke_on_load=True,
        on_load_failure_callback=_failed(namespace),
        on_missing_entrypoints_callback=_missing(namespace),
    )
    return tuple(_checked(namespace, ext.name, ext.obj) for ext in manager.extensions)


def clear_cache() -> None:
    """
    Forget the loaded plugins and stevedore's per-process list of our entry points, so the next
    load reads the installed packages again (tests; after installing a plugin package).
    """
    _load.cache_clear()
    for namespace in _KIND:
        ExtensionManager.ENTRY_POINT_CACHE.pop(namespace, None)


def load_filters(names: Sequence[str]) -> tuple[HostFilter, ...]:
    """
    :param names: filter names, in the order they should run.
    :returns: one filter object per name, in that order (cached per list of names).
    :raises PluginError: for an unknown or broken filter, or a name given twice.
    """
    return _load(FILTER_NAMESPACE, tuple(names))


def load_weights(names: Sequence[str]) -> tuple[HostWeight, ...]:
    """
    :param names: weight names.
    :returns: one weight object per name, in that order (cached per list of names).
    :raises PluginError: for an unknown or broken weight, or a name given twice.
    """
    return _load(WEIGHT_NAMESPACE, tuple(names))


def units_for(policy: Policy) -> PolicyUnits:
    """
    :returns: the plugins ``policy`` names: the mandatory filters and the policy's, and its
        weights with their factors.
    :raises PluginError: for an unknown or broken plugin.
    :raises PolicyError: for a factor that is not a non-negative integer.
    """
    for name, factor in policy.weights:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 0:
            raise PolicyError(f"weight {name!r}: factor {factor!r} is not a non-negative integer")
    weights = load_weights([name for name, _factor in policy.weights])
    factors = [factor for _name, factor in policy.weights]
    return PolicyUnits(
        load_filters(effective_filters(policy)), tuple(zip(weights, factors, strict=True))
    )
