"""The hook runner: scripts and plugins of one hook point, in a documented order.

:class:`HookRunner` implements :class:`vdsmlike.interfaces.IHookRunner` on top of a script runner
(:class:`hooks.scripts.ScriptHookRunner`, or anything with its ``run``/``installed``) and a
:class:`hooks.plugins.PluginSet`. Order ``"plugins-first"`` (the default) runs the plugins, then
the scripts, with the plugins' output as the scripts' input; ``"scripts-first"`` the reverse.

Failure semantics, per hook: a script's rc≠0 or timeout, a plugin's :class:`HookVeto` or crash,
and (for XML points) a final payload that is not well-formed XML all count as failed hooks. At a
point with ``aborts=True`` any failure fails the run with ``HookError`` (1500) whose detail is the
last failure's message; elsewhere failures are logged, listed in :attr:`HookResult.errors`, and the
run succeeds (with the original payload if the final XML is invalid). A veto, like a script's exit
code 2, skips the point's remaining hooks, plugins and scripts alike.

:class:`NullHookRunner` runs nothing: for agents configured without hooks, and for tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.dom import minidom

import defusedxml.minidom
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from hooks import points as hook_points
from hooks.plugins import HookContext, HookVeto, LoadedPlugin, PluginSet
from vdsmlike.api.errors import HookError
from vdsmlike.interfaces import IHookRunner
from vdsmlike.vm.xmlsafe import InvalidDomainXml, parse_xml

Order = Literal["plugins-first", "scripts-first"]
#: Points after which the launch-flags file is read (``hooking.dump_vm_launch_flags_to_file``).
LAUNCH_FLAG_POINTS = frozenset({"before_vm_start", "before_device_create"})


@dataclass
class HookResult:
    """
    What one run of a hook point produced.

    :ivar payload: the final payload (XML str, JSON object, or None), to be used by the operation.
    :ivar errors: one message per failed hook, in the order they failed.
    :ivar launch_flags: libvirt create flags a hook asked for, or None.
    """

    payload: Any
    errors: list[str] = field(default_factory=list)
    launch_flags: int | None = None


class _Stop(Exception):
    """Internal: the run ends here (a veto or exit 2); the errors are already recorded."""


class _Crashed(Exception):
    """Internal: a plugin raised an unexpected exception; already logged and recorded."""


@dataclass
class _Run:
    """The state of one run: the point, context, payload so far and the errors."""

    point: Any
    context: HookContext
    payload: Any
    errors: list[str] = field(default_factory=list)
    stopped: bool = False


@implementer(IHookRunner)
class HookRunner:
    """Runs a point's plugins and scripts, chaining the payload through them."""

    log = Logger()

    def __init__(
        self,
        scripts: Any,
        plugins: PluginSet,
        *,
        order: Order = "plugins-first",
        runtime_dir: str | None = None,
    ) -> None:
        """
        :param scripts: a :class:`hooks.scripts.ScriptHookRunner` (or a stand-in with ``run`` and
            ``installed``).
        :param plugins: the loaded plugins, in their configured order.
        :param order: ``"plugins-first"`` or ``"scripts-first"``.
        :param runtime_dir: where launch-flags files live; defaults to ``scripts.runtime_dir``.
        :raises ValueError: for an unknown ``order``.
        """
        if order not in ("plugins-first", "scripts-first"):
            raise ValueError(f"unknown hook order {order!r}")
        self._scripts = scripts
        self._plugins = plugins
        self._order = order
        self._runtime_dir = runtime_dir or getattr(scripts, "runtime_dir", None)

    def run(
        self,
        point: str,
        payload: Any,
        *,
        vm_id: str | None = None,
        custom: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Deferred[HookResult]:
        """
        Run every plugin and script of ``point``; see the module docstring for the semantics.

        :returns: a Deferred firing with a :class:`HookResult`. It fails with
            :class:`hooks.points.UnknownHookPoint` for an unknown point, and with
            :class:`HookError` (1500) when a hook fails at a point whose failures abort.
            It never fails because of a hook at other points.
        """
        return Deferred.fromCoroutine(self._run(point, payload, vm_id, custom, params))

    async def _run(
        self,
        name: str,
        payload: Any,
        vm_id: str | None,
        custom: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> HookResult:
        spec = hook_points.point(name)
        state = _Run(spec, HookContext.build(name, vm_id, custom, params), payload)
        phases = [self._run_plugins, self._run_scripts]
        if self._order == "scripts-first":
            phases.reverse()
        for phase in phases:
            if state.stopped:
                break
            await phase(state, custom, params)
        final = self._checked_payload(state, payload)
        flags = self._launch_flags(name, vm_id)  # taken even on failure: no stale file
        if spec.aborts and state.errors:
            raise HookError(state.errors[-1])
        return HookResult(final, state.errors, flags)

    async def _run_scripts(self, state: _Run, custom, params) -> None:
        outcome = await self._scripts.run(
            state.point.name, state.payload, vm_id=state.context.vm_id, custom=custom, params=params
        )
        state.payload = outcome.payload
        state.errors.extend(outcome.errors)
        state.stopped = state.stopped or outcome.stopped

    async def _run_plugins(self, state: _Run, custom, params) -> None:
        """
        Run the point's plugins over ``state.payload``. The payload only changes when a plugin
        returns a value; a plugin that crashes or vetoes leaves no trace of its in-place edits of
        a DOM (it is re-parsed from the last committed text).
        """
        plugins = self._plugins.for_point(state.point.name)
        if not plugins:
            return
        xml = state.point.payload == "xml" and bool(state.payload)
        committed = state.payload
        value = self._parse(state, committed) if xml else committed
        if xml and value is None:
            return
        for plugin in plugins:
            try:
                returned = await self._call(plugin, value, state)
            except _Stop:
                break
            except _Crashed:
                value = self._parse(state, committed) if xml else value
                continue
            if returned is None:
                continue
            committed = _serialize(returned) if xml else returned
            value = returned if not xml or isinstance(returned, minidom.Document) else None
            if value is None:
                value = self._parse(state, committed)
                if value is None:
                    committed = state.payload
                    break
        state.payload = committed

    def _parse(self, state: _Run, text: Any) -> minidom.Document | None:
        """:returns: ``text`` as a DOM, or None (recorded as a failure that stops the point)."""
        try:
            return defusedxml.minidom.parseString(_as_bytes(text))
        except Exception as exc:  # any parser complaint: a hook wrote bad XML
            self._fail(state, f"hook wrote invalid XML: {exc}")
            state.stopped = True
            return None

    async def _call(self, plugin: LoadedPlugin, value: Any, state: _Run) -> Any:
        """
        :returns: what ``plugin`` returned (None for unchanged).
        :raises _Stop: after a veto; :raises _Crashed: after any other exception.
        """
        name = state.point.name
        try:
            returned = plugin.obj(name, value, state.context)
            if inspect.isawaitable(returned):
                returned = await returned
        except HookVeto as veto:
            self._fail(state, str(veto) or f"plugin {plugin.name} vetoed {name}")
            state.stopped = True
            raise _Stop() from veto
        except Exception as exc:
            self.log.failure(
                "hook plugin {plugin} crashed at {point}", plugin=plugin.name, point=name
            )
            self._fail(state, f"plugin {plugin.name} failed: {exc!r}")
            raise _Crashed() from exc
        self.log.debug("hook plugin {plugin} ran at {point}", plugin=plugin.name, point=name)
        return returned

    def _fail(self, state: _Run, message: str) -> None:
        self.log.warn("hook failed at {point}: {message}", point=state.point.name, message=message)
        state.errors.append(message)

    def _checked_payload(self, state: _Run, original: Any) -> Any:
        """:returns: the final payload, or ``original`` if a hook left ill-formed XML."""
        if state.point.payload != "xml" or not original:
            return state.payload
        try:
            parse_xml(state.payload if state.payload is not None else "")
        except InvalidDomainXml as exc:
            self._fail(state, f"hook wrote invalid XML: {exc}")
            return original
        return state.payload

    def _launch_flags(self, point: str, vm_id: str | None) -> int | None:
        if point not in LAUNCH_FLAG_POINTS or vm_id is None or self._runtime_dir is None:
            return None
        from hooks.scripts import take_launch_flags

        return take_launch_flags(self._runtime_dir, vm_id)

    def installed(self) -> dict[str, dict[str, dict[str, str]]]:
        """
        :returns: the scripts' inventory (``{point: {script: {"checksum": sha256}}}``) merged with
            the plugins', listed as ``"plugin:<name>"`` with the sha256 of their source file.
        """
        result = {point: dict(scripts) for point, scripts in self._scripts.installed().items()}
        for point, entries in self._plugins.installed(list(hook_points.POINTS)).items():
            result.setdefault(point, {}).update(entries)
        return result


def _as_bytes(payload: Any) -> bytes:
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)


def _serialize(value: Any) -> Any:
    """:returns: the XML text of a plugin's result (a DOM, an element, or already a string)."""
    if isinstance(value, minidom.Document):
        root = value.documentElement
        return root.toxml() if root is not None else ""
    if isinstance(value, minidom.Node):
        return value.toxml()
    return value


@implementer(IHookRunner)
class NullHookRunner:
    """A hook runner with no hooks: every point passes the payload through unchanged."""

    def run(
        self,
        point: str,
        payload: Any,
        *,
        vm_id: str | None = None,
        custom: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Deferred[HookResult]:
        """:returns: a Deferred that has fired with ``HookResult(payload, [], None)``."""
        return succeed(HookResult(payload))

    def installed(self) -> dict[str, dict[str, dict[str, str]]]:
        """:returns: ``{}``."""
        return {}
