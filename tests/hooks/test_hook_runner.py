"""Tests for hooks.runner: plugins and scripts at one point, order, chaining and failures.

The script side is a scripted stand-in (:class:`FakeScriptRunner`) here; the real
``ScriptHookRunner`` is exercised in ``test_examples.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stevedore.extension import Extension
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hooks.plugins import HookContext, HookVeto, PluginSet
from hooks.points import UnknownHookPoint
from hooks.runner import HookResult, HookRunner, NullHookRunner
from hooks.scripts import ScriptsOutcome
from vdsmlike.api.errors import HookError
from vdsmlike.interfaces import IHookRunner

DOMAIN = "<domain type='kvm'><name>vm1</name></domain>"
#: A fake script: payload in, (payload out, rc, stderr) out.
FakeScript = Callable[[Any], tuple[Any, int, str]]


class FakeScriptRunner:
    """Runs scripted Python callables with VDSM's exit-code rules and records each call."""

    def __init__(self, scripts: list[FakeScript] | None = None, log: list | None = None) -> None:
        self.scripts = scripts or []
        self.calls: list[tuple] = []
        self.log = log if log is not None else []

    def run(self, point, payload, *, vm_id=None, custom=None, params=None) -> Deferred:
        self.calls.append((point, payload, vm_id, custom, params))
        outcome = ScriptsOutcome(payload)
        for script in self.scripts:
            self.log.append("script")
            outcome.payload, rc, stderr = script(outcome.payload)
            if rc != 0:
                outcome.errors.append(stderr)
            if rc == 2:
                outcome.stopped = True
                break
        return succeed(outcome)

    def installed(self) -> dict:
        return {"before_vm_start": {"10_x": {"checksum": "ab" * 32}}}


def script_ok(payload: Any) -> tuple[Any, int, str]:
    """A script that changes nothing."""
    return payload, 0, ""


def script_rename(payload: str) -> tuple[str, int, str]:
    """A script that renames the VM to ``scripted``."""
    return payload.replace("<name>vm1</name>", "<name>scripted</name>"), 0, ""


def script_fails(rc: int, stderr: str = "script failed") -> FakeScript:
    """:returns: a script that exits with ``rc``."""
    return lambda payload: (payload, rc, stderr)


class FakePlugin:
    """A plugin serving given points that runs ``action(payload, context)``."""

    def __init__(self, action: Callable, points=("before_vm_start",), log: list | None = None):
        self.points = frozenset(points)
        self.action = action
        self.log = log if log is not None else []
        self.seen: list[tuple] = []

    def __call__(self, point: str, payload: Any, context: HookContext) -> Any:
        self.log.append("plugin")
        self.seen.append((point, payload, context))
        return self.action(payload, context)


def plugin_set(*plugins: FakePlugin) -> PluginSet:
    """:returns: a set of the given plugins, named p0, p1, ... in order."""
    return PluginSet.from_extensions(
        [Extension(f"p{i}", None, FakePlugin, p) for i, p in enumerate(plugins)]
    )


def set_name(text: str) -> Callable:
    """:returns: a plugin action setting the DOM's ``<name>`` to ``text``."""

    def action(dom, context):
        dom.getElementsByTagName("name")[0].firstChild.data = text
        return dom

    return action


def veto(message: str) -> Callable:
    """:returns: a plugin action that vetoes with ``message``."""

    def action(payload, context):
        raise HookVeto(message)

    return action


def crash(payload, context):
    """A plugin action with a bug."""
    raise ZeroDivisionError("plugin bug")


class HookRunnerTests(SynchronousTestCase):
    def run_hooks(self, runner, point="before_vm_start", payload=DOMAIN, **kw) -> HookResult:
        """:returns: the result of a run that has already fired."""
        return self.successResultOf(runner.run(point, payload, **kw))

    def test_provides_interface(self) -> None:
        """Both runners provide IHookRunner."""
        verifyObject(IHookRunner, HookRunner(FakeScriptRunner(), PluginSet()))
        verifyObject(IHookRunner, NullHookRunner())

    def test_null_runner_passes_payload_through(self) -> None:
        """The null runner returns the payload unchanged with no errors."""
        result = self.run_hooks(NullHookRunner())
        self.assertEqual((result.payload, result.errors, result.launch_flags), (DOMAIN, [], None))

    def test_unknown_point_fails(self) -> None:
        """An unknown point fails the run with UnknownHookPoint and runs nothing."""
        scripts = FakeScriptRunner()
        d = HookRunner(scripts, PluginSet()).run("before_nap", DOMAIN)
        self.failureResultOf(d, UnknownHookPoint)
        self.assertEqual(scripts.calls, [])

    def test_plugins_first_by_default_and_chained(self) -> None:
        """By default plugins run before scripts, and the scripts get the plugins' output."""
        log: list[str] = []
        scripts = FakeScriptRunner([script_ok], log)
        runner = HookRunner(scripts, plugin_set(FakePlugin(set_name("plugged"), log=log)))
        result = self.run_hooks(runner)
        self.assertEqual(log, ["plugin", "script"])
        self.assertIn("<name>plugged</name>", scripts.calls[0][1])
        self.assertIn("<name>plugged</name>", result.payload)

    def test_scripts_first_chains_into_plugins(self) -> None:
        """With scripts-first the plugins receive the scripts' output as a DOM."""
        log: list[str] = []
        plugin = FakePlugin(lambda dom, ctx: None, log=log)
        runner = HookRunner(
            FakeScriptRunner([script_rename], log), plugin_set(plugin), order="scripts-first"
        )
        result = self.run_hooks(runner)
        self.assertEqual(log, ["script", "plugin"])
        dom = plugin.seen[0][1]
        self.assertEqual(dom.getElementsByTagName("name")[0].firstChild.data, "scripted")
        self.assertIn("<name>scripted</name>", result.payload)

    def test_plugins_chain_in_order(self) -> None:
        """Each plugin sees the DOM as the previous one left it; the last one wins."""
        first, second = FakePlugin(set_name("one")), FakePlugin(set_name("two"))
        result = self.run_hooks(HookRunner(FakeScriptRunner(), plugin_set(first, second)))
        self.assertIn("<name>two</name>", result.payload)

    def test_plugin_gets_context(self) -> None:
        """A plugin gets the point, vm id, custom properties and params."""
        plugin = FakePlugin(lambda dom, ctx: None)
        runner = HookRunner(FakeScriptRunner(), plugin_set(plugin))
        self.run_hooks(runner, vm_id="vm-1", custom={"a": "1"}, params={"b": "2"})
        point, _, context = plugin.seen[0]
        self.assertEqual(
            (point, context.point, context.vm_id, dict(context.custom), dict(context.params)),
            ("before_vm_start", "before_vm_start", "vm-1", {"a": "1"}, {"b": "2"}),
        )

    def test_unchanged_payload_when_no_plugin_serves(self) -> None:
        """Without plugins for the point the payload reaches the scripts untouched."""
        scripts = FakeScriptRunner()
        runner = HookRunner(scripts, plugin_set(FakePlugin(crash, points=["after_vm_start"])))
        self.assertEqual(self.run_hooks(runner).payload, DOMAIN)
        self.assertIs(scripts.calls[0][1], DOMAIN)

    def test_none_keeps_payload_text(self) -> None:
        """Plugins returning None leave the payload text exactly as it was."""
        runner = HookRunner(FakeScriptRunner(), plugin_set(FakePlugin(lambda d, c: None)))
        self.assertEqual(self.run_hooks(runner).payload, DOMAIN)

    def test_crash_discards_partial_edits(self) -> None:
        """A plugin that edits the DOM and then crashes leaves no trace; later plugins still run."""

        def edit_then_crash(dom, context):
            set_name("half")(dom, context)
            raise RuntimeError("oops")

        plugins = plugin_set(
            FakePlugin(set_name("one"), points=["after_vm_start"]),
            FakePlugin(edit_then_crash, points=["after_vm_start"]),
            FakePlugin(lambda d, c: d, points=["after_vm_start"]),
        )
        result = self.run_hooks(HookRunner(FakeScriptRunner(), plugins), point="after_vm_start")
        self.assertIn("<name>one</name>", result.payload)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_plugin_returning_bad_xml_text(self) -> None:
        """A plugin returning ill-formed XML text counts as writing invalid XML."""
        runner = HookRunner(FakeScriptRunner(), plugin_set(FakePlugin(lambda d, c: "<x")))
        failure = self.failureResultOf(runner.run("before_vm_start", DOMAIN), HookError)
        self.assertIn("hook wrote invalid XML", failure.value.detail)

    def test_veto_aborts_with_message(self) -> None:
        """A veto at an aborting point fails with HookError 1500 carrying the message."""
        scripts = FakeScriptRunner([script_ok])
        runner = HookRunner(scripts, plugin_set(FakePlugin(veto("no way"))))
        failure = self.failureResultOf(runner.run("before_vm_start", DOMAIN), HookError)
        self.assertEqual((failure.value.code, failure.value.detail), (1500, "no way"))
        self.assertEqual(scripts.calls, [], "a veto stops the point's remaining hooks")

    def test_plugin_crash_aborts_like_failing_script(self) -> None:
        """A crashing plugin at an aborting point fails the run, after the scripts still ran."""
        scripts = FakeScriptRunner([script_ok])
        runner = HookRunner(scripts, plugin_set(FakePlugin(crash)))
        failure = self.failureResultOf(runner.run("before_vm_start", DOMAIN), HookError)
        self.assertIn("ZeroDivisionError", failure.value.detail)
        self.assertEqual(len(scripts.calls), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1, "traceback logged")

    def test_failing_script_aborts_with_last_stderr(self) -> None:
        """Scripts exiting 1 then 3 fail an aborting point with the last one's stderr."""
        scripts = FakeScriptRunner([script_fails(1, "first"), script_fails(3, "last")])
        failure = self.failureResultOf(
            HookRunner(scripts, PluginSet()).run("before_vm_start", DOMAIN), HookError
        )
        self.assertEqual(failure.value.detail, "last")

    def test_script_exit_2_skips_later_plugins(self) -> None:
        """A script's exit 2 with scripts-first leaves the plugins unrun."""
        plugin = FakePlugin(lambda dom, ctx: None, points=["after_vm_start"])
        runner = HookRunner(
            FakeScriptRunner([script_fails(2)]), plugin_set(plugin), order="scripts-first"
        )
        result = self.run_hooks(runner, point="after_vm_start")
        self.assertEqual((plugin.seen, result.errors), ([], ["script failed"]))

    def test_after_point_failures_never_raise(self) -> None:
        """At an after_* point a veto, a crash and a failing script are only reported."""
        plugins = plugin_set(
            FakePlugin(crash, points=["after_vm_start"]),
            FakePlugin(veto("late"), points=["after_vm_start"]),
        )
        runner = HookRunner(FakeScriptRunner([script_fails(1)]), plugins)
        result = self.run_hooks(runner, point="after_vm_start")
        self.assertEqual(len(result.errors), 2)
        self.assertEqual(result.errors[-1], "late")
        self.assertEqual(result.payload, DOMAIN)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_invalid_xml_aborts(self) -> None:
        """Ill-formed XML from a script at an aborting point fails with 'hook wrote invalid XML'."""
        scripts = FakeScriptRunner([lambda p: ("<domain><oops", 0, "")])
        failure = self.failureResultOf(
            HookRunner(scripts, PluginSet()).run("before_vm_start", DOMAIN), HookError
        )
        self.assertIn("hook wrote invalid XML", failure.value.detail)

    def test_invalid_xml_at_after_point_keeps_original(self) -> None:
        """Ill-formed XML at an after_* point is reported and the original payload kept."""
        scripts = FakeScriptRunner([lambda p: ("garbage", 0, "")])
        result = self.run_hooks(HookRunner(scripts, PluginSet()), point="after_vm_start")
        self.assertEqual(result.payload, DOMAIN)
        self.assertIn("hook wrote invalid XML", result.errors[0])

    def test_invalid_xml_before_plugins_skips_them(self) -> None:
        """With scripts-first, ill-formed XML from a script is a failure and plugins do not run."""
        plugin = FakePlugin(lambda dom, ctx: None)
        scripts = FakeScriptRunner([lambda p: ("<a", 0, "")])
        runner = HookRunner(scripts, plugin_set(plugin), order="scripts-first")
        self.failureResultOf(runner.run("before_vm_start", DOMAIN), HookError)
        self.assertEqual(plugin.seen, [])

    def test_json_point_gets_object(self) -> None:
        """At a JSON point plugins get and return the Python object."""
        plugin = FakePlugin(lambda obj, ctx: {**obj, "extra": 1}, points=["after_get_caps"])
        scripts = FakeScriptRunner()
        result = self.run_hooks(
            HookRunner(scripts, plugin_set(plugin)), point="after_get_caps", payload={"a": 0}
        )
        self.assertEqual(result.payload, {"a": 0, "extra": 1})
        self.assertEqual(scripts.calls[0][1], {"a": 0, "extra": 1})

    def test_async_plugin_is_awaited(self) -> None:
        """A plugin returning a Deferred is waited for and its result used."""
        clock = Clock()
        plugin = FakePlugin(
            lambda obj, ctx: deferLater(clock, 1.0, lambda: ["late"]), points=["after_get_stats"]
        )
        d = HookRunner(FakeScriptRunner(), plugin_set(plugin)).run("after_get_stats", [])
        self.assertNoResult(d)
        clock.advance(1.0)
        self.assertEqual(self.successResultOf(d).payload, ["late"])

    def test_coroutine_plugin_is_awaited(self) -> None:
        """An ``async def`` plugin is awaited."""

        async def action(obj, ctx):
            return obj + [1]

        plugin = FakePlugin(action, points=["after_get_stats"])
        result = self.run_hooks(
            HookRunner(FakeScriptRunner(), plugin_set(plugin)), point="after_get_stats", payload=[]
        )
        self.assertEqual(result.payload, [1])

    def test_installed_merges_plugins(self) -> None:
        """The inventory lists scripts and plugins (as ``plugin:<name>``) per point."""
        runner = HookRunner(FakeScriptRunner(), plugin_set(FakePlugin(crash)))
        inventory = runner.installed()["before_vm_start"]
        self.assertEqual(sorted(inventory), ["10_x", "plugin:p0"])

    def test_unknown_order_refused(self) -> None:
        """An unknown order is refused at construction."""
        self.assertRaises(ValueError, HookRunner, FakeScriptRunner(), PluginSet(), order="random")
