"""In-process hook plugins: the plugin API and loading them with stevedore.

A plugin is registered under the entry-point namespace ``vdsmlike.hooks`` (see ``docs/hooks.md``)::

    [options.entry_points]
    vdsmlike.hooks =
        describe = mypkg.hooks:DescribeFromCustom

The entry point names a class (instantiated with no arguments) or any object that has:

- ``points``: a collection of hook point names the plugin serves, **or** a method
  ``serves(point: str) -> bool`` (which wins when both are present);
- ``__call__(point, payload, context)``: returns the modified payload, or ``None`` for "unchanged".
  For XML points the payload is a :class:`xml.dom.minidom.Document` (what ``hooking.read_domxml()``
  gives scripts): edit it in place and return it, or return a new Document or XML text. ``None``
  keeps the payload text exactly as it was, so in-place edits count only when the document is
  returned. For JSON points the payload is the Python object; for points without a payload it is
  ``None``. The call may be ``async def`` or return a Deferred; the runner waits for it.

A plugin vetoes an operation by raising :class:`HookVeto`; at a point whose failures abort
(the ``before_*`` points) the operation fails with ``HookError`` (1500) carrying the veto message,
and the remaining hooks of the point do not run (like a script's exit code 2). Any other exception
counts as a failing hook (like a script's exit code 1): logged with its traceback, never raised.

Which plugins load, and in which order, comes from configuration: :func:`load_plugins` imports only
the named ones, in the given order, and skips (with a log line) any that fail to load.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from stevedore.extension import Extension
from stevedore.named import NamedExtensionManager
from twisted.logger import Logger
from twisted.python.failure import Failure

#: The entry-point namespace plugins register under.
NAMESPACE = "vdsmlike.hooks"

_log = Logger(namespace="hooks.plugins")


class HookVeto(Exception):
    """
    Raised by a plugin to veto the operation at this point.

    At an aborting point (``before_*``) the operation fails with ``HookError`` (1500) whose detail
    is ``str(veto)``; elsewhere it is logged. Either way the point's remaining hooks are skipped.
    """


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class HookContext:
    """
    What a plugin knows about the call besides the payload; the same facts scripts get as env.

    :ivar point: the hook point name, e.g. ``"before_vm_start"``.
    :ivar vm_id: the VM's id (scripts' ``vmId``), or None for host-level points.
    :ivar custom: the VM's (or device's) custom properties, read-only.
    :ivar params: the call's extra parameters (VDSM's ``params``), read-only.
    """

    point: str
    vm_id: str | None = None
    custom: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        point: str,
        vm_id: str | None = None,
        custom: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HookContext:
        """:returns: a context whose mappings are read-only copies of ``custom`` and ``params``."""
        return cls(point, vm_id, _frozen(custom), _frozen(params))


@runtime_checkable
class HookPlugin(Protocol):
    """The shape of a plugin (documentation and type hints; nothing inherits from it)."""

    points: Collection[str]

    def __call__(self, point: str, payload: Any, context: HookContext) -> Any:
        """:returns: the new payload, None for unchanged, or an awaitable of either."""


def serves(obj: Any, point: str) -> bool:
    """
    :returns: whether plugin ``obj`` wants to run at ``point``: its ``serves(point)`` if it has
        one, otherwise ``point in obj.points``.
    """
    method = getattr(obj, "serves", None)
    if callable(method):
        return bool(method(point))
    return point in getattr(obj, "points", ())


def _checksum(obj: Any) -> str:
    """:returns: the sha256 of the source file defining the plugin's class, or ``""``."""
    try:
        path = inspect.getsourcefile(type(obj) if not inspect.isfunction(obj) else obj)
        if path is None:
            return ""
        with open(path, "rb") as source:
            return hashlib.sha256(source.read()).hexdigest()
    except (OSError, TypeError):
        return ""


@dataclass(frozen=True)
class LoadedPlugin:
    """One usable plugin: its configured name and the object to call."""

    name: str
    obj: Any

    def serves(self, point: str) -> bool:
        """:returns: whether this plugin runs at ``point``."""
        return serves(self.obj, point)


class PluginSet:
    """
    The loaded plugins, in their configured order.

    Built from a stevedore manager; we iterate its extensions ourselves (no ``map``, which swallows
    errors and raises ``NoMatches`` on an empty set). Extensions whose object is not callable or
    declares no points are skipped with a log line.
    """

    def __init__(self, manager: NamedExtensionManager | None = None) -> None:
        """:param manager: a stevedore manager with ``invoke_on_load`` objects, or None (empty)."""
        self._plugins: list[LoadedPlugin] = []
        for ext in manager.extensions if manager is not None else ():
            plugin = _usable(ext)
            if plugin is not None:
                self._plugins.append(plugin)

    @classmethod
    def from_extensions(cls, extensions: Sequence[Extension]) -> PluginSet:
        """
        A set built from ready-made extensions, for tests (stevedore's ``make_test_instance``).

        :param extensions: ``Extension(name, None, PluginClass, plugin_object)`` items, in order.
        """
        manager = NamedExtensionManager.make_test_instance(list(extensions), namespace=NAMESPACE)
        return cls(manager)

    def __iter__(self) -> Iterator[LoadedPlugin]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    def names(self) -> list[str]:
        """:returns: the loaded plugins' names, in order."""
        return [plugin.name for plugin in self._plugins]

    def for_point(self, point: str) -> list[LoadedPlugin]:
        """:returns: the plugins serving ``point``, in order."""
        return [plugin for plugin in self._plugins if plugin.serves(point)]

    def installed(self, points: Iterable[str]) -> dict[str, dict[str, dict[str, str]]]:
        """
        The plugins in ``Host.getCapabilities`` form.

        :param points: every known point name (a plugin's ``serves`` is asked about each).
        :returns: ``{point: {"plugin:<name>": {"checksum": <sha256 of its source file or "">}}}``.
        """
        result: dict[str, dict[str, dict[str, str]]] = {}
        for point in points:
            for plugin in self.for_point(point):
                entry = {"checksum": _checksum(plugin.obj)}
                result.setdefault(point, {})[f"plugin:{plugin.name}"] = entry
        return result


def _usable(ext: Extension) -> LoadedPlugin | None:
    obj = ext.obj if ext.obj is not None else ext.plugin
    if not callable(obj) or not (hasattr(obj, "points") or hasattr(obj, "serves")):
        _log.error(
            "hook plugin {name} skipped: it needs __call__ and points (or serves)", name=ext.name
        )
        return None
    return LoadedPlugin(ext.name, obj)


def _load_failed(manager: Any, entrypoint: Any, exc: BaseException) -> None:
    _log.failure(
        "hook plugin {name} failed to load; skipped",
        failure=Failure(exc),
        name=getattr(entrypoint, "name", entrypoint),
    )


def load_plugins(names: Sequence[str], *, disabled: Collection[str] = ()) -> PluginSet:
    """
    Import and instantiate the configured plugins.

    Only plugins named in ``names`` and not in ``disabled`` are imported, in the order of ``names``.
    A plugin that fails to import or to instantiate is logged with its traceback and skipped; a
    name with no entry point is logged and skipped. Never raises for a bad plugin.

    :param names: entry-point names in ``vdsmlike.hooks``, in the order they should run.
    :param disabled: names to leave out (not even imported).
    :returns: the usable plugins.
    """
    wanted = [name for name in names if name not in set(disabled)]
    if not wanted:
        return PluginSet()
    manager = NamedExtensionManager(
        NAMESPACE,
        wanted,
        name_order=True,
        invoke_on_load=True,
        on_load_failure_callback=_load_failed,
        on_missing_entrypoints_callback=_missing,
    )
    return PluginSet(manager)


def _missing(names: Iterable[str]) -> None:
    _log.error("hook plugins not found in {ns}: {names}", ns=NAMESPACE, names=sorted(names))
