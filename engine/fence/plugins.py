"""Loading fence agents and power drivers by name with stevedore.

Ours are registered in ``setup.cfg``; another package adds its own next to them::

    [options.entry_points]
    vdsmlike.engine.fence =
        soft = engine.fence.soft:SoftFenceAgent
        power = engine.fence.power:PowerFenceAgent
    vdsmlike.engine.power =
        process = engine.fence.process:ProcessPowerDriver

A name that is not installed, a plugin that fails to import, or an object of the wrong shape is
a :class:`FencePluginError` naming it (and what is installed), never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from stevedore.named import NamedExtensionManager

from .interfaces import FENCE_NAMESPACE, POWER_NAMESPACE, FenceSettings, IPowerDriverFactory


class FencePluginError(LookupError):
    """A fence agent or power driver that is unknown, fails to load, or has the wrong shape."""


def installed(namespace: str) -> list[str]:
    """:returns: the sorted names registered under ``namespace`` (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=namespace)})


def _manager(namespace: str, names: list[str], what: str, **kwargs: Any) -> Any:
    def missing(absent: Iterable[str]) -> None:
        known = ", ".join(installed(namespace)) or "none"
        wanted = ", ".join(repr(n) for n in sorted(absent))
        raise FencePluginError(f"no {what} {wanted} is installed (installed: {known})")

    def failed(manager: Any, entrypoint: Any, error: BaseException) -> None:
        raise FencePluginError(f"{what} {entrypoint.name!r} failed to load: {error!r}") from error

    return NamedExtensionManager(
        namespace, names, name_order=True, on_missing_entrypoints_callback=missing,
        on_load_failure_callback=failed, **kwargs,
    )  # fmt: skip


def load_agents(
    names: Iterable[str] | None = None, *, reactor: Any, settings: FenceSettings | None = None
) -> dict[str, Any]:
    """
    Create the fence agents.

    :param names: which (all installed ones by default).
    :returns: ``{name: IFenceAgent}``.
    :raises FencePluginError: for an unknown or broken agent.
    """
    wanted = list(names) if names is not None else installed(FENCE_NAMESPACE)
    manager = _manager(
        FENCE_NAMESPACE, wanted, "fence agent", invoke_on_load=True,
        invoke_kwds={"reactor": reactor, "settings": settings or FenceSettings()},
    )  # fmt: skip
    agents = {}
    for ext in manager.extensions:
        if getattr(ext.obj, "name", None) != ext.name or not callable(
            getattr(ext.obj, "fence", None)
        ):
            raise FencePluginError(f"fence agent {ext.name!r} is not an IFenceAgent named "
                                   f"{ext.name!r}: {ext.obj!r}")  # fmt: skip
        agents[ext.name] = ext.obj
    return agents


def power_driver(name: str) -> Any:
    """
    :returns: the power driver factory (``IPowerDriverFactory``) registered as ``name``.
    :raises FencePluginError: for an unknown or broken driver.
    """
    if not name:
        raise FencePluginError("no power driver is configured")
    manager = _manager(POWER_NAMESPACE, [name], "power driver")
    factory = manager.extensions[0].plugin
    if not IPowerDriverFactory.providedBy(factory) or getattr(factory, "name", None) != name:
        raise FencePluginError(f"power driver {name!r} is not an IPowerDriverFactory named "
                               f"{name!r}: {factory!r}")  # fmt: skip
    return factory
