"""The agent's service tree: ``make_service(config, reactor)`` wires adapters to the core.

Nothing else builds objects for the daemon. Children start in order: the blocking runner, the
core (libvirt open, host facts, recovery, periodic sampling) and the RPC listener, which answers
VDSM's error 99 until the core is ready.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger

from hooks.plugins import load_plugins
from hooks.runner import HookRunner
from hooks.scripts import ScriptHookRunner
from mom.service import DEFAULT_POLICY_DIR, MomConfig, MomService, PolicyEngine

from .api.host import AgentRestart, HostApi
from .api.migration import MigrationApi
from .api.mom import MomApi
from .api.schema import Schema
from .api.verbs import collect
from .api.vm import VmApi
from .config import AgentConfig, mom_controller_names
from .host.ksm import KsmSysfs
from .host.monitor import HostMonitor
from .interfaces import IBlockingRunner, IHookRunner, IHypervisor
from .momlink import AgentMomLink
from .rpc.dispatcher import Dispatcher
from .rpc.events import EventBus
from .rpc.websocket import AgentServerFactory, listen_description
from .virt.embedded import embedded_root, prepare_embedded_root
from .virt.libvirt import LibvirtHypervisor
from .virt.runner import ThreadPoolRunner
from .vm.console import SerialConsole
from .vm.container import ContainerConfig, VmContainer
from .vm.monitor import VmStatsMonitor
from .vm.tune import VmTuning


class RunnerService(Service):
    """Starts and stops the blocking runner's threads."""

    def __init__(self, runner: IBlockingRunner) -> None:
        self._runner = runner

    def startService(self) -> None:
        super().startService()
        self._runner.start()

    def stopService(self) -> Deferred:
        super().stopService()
        return self._runner.stop()


class AgentCoreService(Service):
    """
    Opens the hypervisor, recovers the VMs, then samples VMs and the host periodically.

    :ivar ready: a Deferred firing once VMs are recovered (failing if libvirt cannot be used).
    """

    log = Logger()

    def __init__(
        self,
        hypervisor: IHypervisor,
        container: VmContainer,
        vm_monitor: VmStatsMonitor,
        host_monitor: HostMonitor,
        *,
        clock: Any,
        vm_interval: float,
        host_interval: float,
        hooks: IHookRunner,
    ) -> None:
        self._hv = hypervisor
        self._hooks = hooks
        self._container = container
        self._vm_monitor = vm_monitor
        self._host_monitor = host_monitor
        self._clock = clock
        self._intervals = (vm_interval, host_interval)
        self._loops: list[LoopingCall] = []
        self.ready: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self.ready.callback, self.ready.errback)

    async def _start(self) -> int:
        await self._hooks.run("before_vdsm_start", None)
        self.log.info("opening libvirt at {uri}", uri=self._hv.uri)
        await self._hv.open()
        self._hv.set_event_listener(self._container.on_domain_event)
        await self._host_monitor.start()
        count = await self._container.recover()
        self.log.info("recovery done: {count} VMs", count=count)
        for fn, interval in zip(
            (self._vm_monitor.sample, self._host_monitor.sample), self._intervals, strict=True
        ):
            self._loops.append(self._loop(fn, interval))
        return count

    def _loop(self, fn: Any, interval: float) -> LoopingCall:
        def tick() -> Deferred:
            d = Deferred.fromCoroutine(fn())
            d.addErrback(lambda f: self.log.failure("periodic {name} failed", f, name=fn.__name__))
            return d

        loop = LoopingCall(tick)
        loop.clock = self._clock
        loop.start(interval, now=True).addErrback(
            lambda f: self.log.failure("periodic loop stopped", f)
        )
        return loop

    async def _stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self._hv.set_event_listener(None)
        await self._hv.close()
        await self._hooks.run("after_vdsm_stop", None)

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())


class ListenerService(Service):
    """Listens for JSON-RPC connections; logs the URL and writes it to ``agent.url``."""

    log = Logger()

    def __init__(self, reactor: Any, config: AgentConfig, factory: AgentServerFactory) -> None:
        self._reactor = reactor
        self._config = config
        self._factory = factory
        self._port: Any = None
        self.url: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(
            self._reactor, listen_description(self._config.listen_host, self._config.listen_port)
        )
        d = endpoint.listen(self._factory)
        d.addCallback(self._listening)
        d.addErrback(self._failed)

    def _listening(self, port: Any) -> None:
        self._port = port
        host = self._config.listen_host
        shown = f"[{host}]" if ":" in host else host
        url = f"ws://{shown}:{port.getHost().port}{self._factory.path}"
        with open(self._config.url_file, "w", encoding="utf-8") as f:
            f.write(url + "\n")
        self.log.info("listening on {url}", url=url)
        self.url.callback(url)

    def _failed(self, failure: Any) -> None:
        self.log.failure("cannot listen", failure)
        self.url.errback(failure)

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()
        return None


def make_hypervisor(config: AgentConfig, runner: IBlockingRunner, reactor: Any) -> IHypervisor:
    """The hypervisor adapter for the configured URI."""
    root = embedded_root(config.libvirt_uri)
    if root is not None:
        prepare_embedded_root(root)
    return LibvirtHypervisor(config.libvirt_uri, runner, reactor)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def make_hooks(config: AgentConfig, reactor: Any) -> IHookRunner:
    """The hook runner: scripts under the hooks dir and the configured plugins."""
    scripts = ScriptHookRunner(
        config.hooks_dir,
        reactor=reactor,
        runtime_dir=config.runtime_dir,
        timeout=config.hook_timeout,
    )
    plugins = load_plugins(
        _names(config.hook_plugins), disabled=_names(config.hook_disabled_plugins)
    )
    return HookRunner(scripts, plugins, order=config.hook_order)


def make_service(config: AgentConfig, reactor: Any) -> MultiService:
    """
    Build the agent's service tree.

    The returned service has attributes ``core`` (:class:`AgentCoreService`, with ``ready``),
    ``listener`` (:class:`ListenerService`, with ``url``), ``bus``, ``container``,
    ``hypervisor`` and ``tuning``.
    """
    for directory in (config.state_dir, config.serial_dir, config.runtime_dir):
        os.makedirs(directory, exist_ok=True)
    runner = ThreadPoolRunner(reactor)
    hypervisor = make_hypervisor(config, runner, reactor)
    bus = EventBus()
    hooks = make_hooks(config, reactor)
    container = VmContainer(
        hypervisor,
        clock=reactor,
        publish=bus.publish,
        event_time=bus.next_time,
        config=ContainerConfig(
            domain_type=None if config.domain_type == "keep" else config.domain_type,
            guest_wait_timeout=config.guest_wait_timeout,
            serial_dir=config.serial_dir,
        ),
        hooks=hooks,
    )
    tuning = VmTuning(container, hypervisor, ksm=KsmSysfs(config.ksm_dir, runner=runner))
    vm_monitor = VmStatsMonitor(
        hypervisor,
        stale_after=max(60.0, 4 * config.vm_sample_interval),
        tuning=tuning.stats_fields,
    )
    host_monitor = HostMonitor(
        hypervisor,
        runner,
        disk_paths=("/tmp", "/var/log", config.state_dir),
        libvirt_uri=config.libvirt_uri,
    )
    mom = make_mom(config, reactor, AgentMomLink(container, vm_monitor, tuning))
    schema = Schema.load(strict=config.strict)
    restart = AgentRestart(reactor)
    handlers = collect(
        HostApi(
            container,
            vm_monitor,
            host_monitor,
            hooks=hooks,
            tuning=tuning,
            mom=None if mom is None else mom.status,
            restart=restart,
        ),
        VmApi(
            container,
            vm_monitor,
            hooks=hooks,
            tuning=tuning,
            console=SerialConsole(container, runner),
        ),
        MomApi(None if mom is None else mom.engine.store),
        MigrationApi.for_agent(
            config,
            reactor,
            container=container,
            hypervisor=hypervisor,
            hooks=hooks,
            publish=bus.publish,
        ),
    )
    dispatcher = Dispatcher(
        handlers,
        schema.bind_params,
        is_ready=lambda: container.ready,
        check_result=schema.check_result if config.validate_results else None,
    )
    factory = AgentServerFactory(
        None,
        dispatcher,
        bus,
        token=config.token,
        max_message_size=config.max_message_size,
    )
    top = MultiService()
    RunnerService(runner).setServiceParent(top)
    top.core = AgentCoreService(
        hypervisor,
        container,
        vm_monitor,
        host_monitor,
        clock=reactor,
        vm_interval=config.vm_sample_interval,
        host_interval=config.host_sample_interval,
        hooks=hooks,
    )
    top.core.setServiceParent(top)
    if mom is not None:
        mom.setServiceParent(top)
    top.listener = ListenerService(reactor, config, factory)
    top.listener.setServiceParent(top)
    top.bus, top.container, top.schema, top.hooks = bus, container, schema, hooks
    top.hypervisor, top.tuning, top.mom, top.vm_monitor = hypervisor, tuning, mom, vm_monitor
    top.restart = restart  # the daemon sets top.restart.exit (Host.restart)
    return top


def make_mom(config: AgentConfig, reactor: Any, agent: AgentMomLink) -> MomService | None:
    """:returns: the embedded MOM policy thread's service, or ``None`` when MOM is disabled."""
    if not config.mom_enabled:
        return None
    mom_config = MomConfig(
        policy_interval=config.mom_policy_interval,
        host_interval=config.mom_host_interval,
        guest_interval=config.mom_guest_interval,
        history=config.mom_sample_history,
        policy_dir=config.mom_policy_dir or DEFAULT_POLICY_DIR,
        controllers=mom_controller_names(config),
        ksm_root=config.ksm_dir,
    )
    engine = PolicyEngine(agent, lambda f: blockingCallFromThread(reactor, f), mom_config)
    return MomService(engine, mom_config)
