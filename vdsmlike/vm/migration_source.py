"""One VM's outgoing live migration: the source agent's job, from ``VM.migrate`` to the end.

The job (:class:`OutgoingMigration`) waits for an outgoing slot, asks the destination agent to
prepare (``VM.migrationCreate`` over a JSON-RPC link; a busy destination, error 82, is asked
again after ``retry_timeout``), runs libvirt's peer-to-peer migration through
:class:`~vdsmlike.interfaces.ILiveMigration`, and samples its progress every
``monitor_interval`` seconds: each sample goes through the pure convergence state machine
(:mod:`.migration_convergence`), whose actions it applies, and out as a
``|virt|VM_migration_status|<vmId>`` event.

It ends in one of three ways. *Succeeded*: the source VM goes Down with exit reason 4, the
destination is told (``VM.migrationFinish``), ``after_vm_migrate_source`` runs. *Failed* or
*cancelled* (``VM.migrateCancel``): the destination's half is destroyed (``VM.destroy`` there,
as VDSM does), and the VM is Up again here with the reason kept for ``VM.getMigrationStatus``.
Everything runs in the reactor thread; the blocking libvirt calls are the adapter's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from ..interfaces import IAgentConnector, IHookRunner, ILiveMigration
from ..virt.errors import HypervisorError
from . import migration_convergence as convergence
from .container import VmContainer
from .migration import (
    MigrateParams,
    MigrationRequest,
    MigrationSettings,
    MigrationView,
    migration_request,
    migration_status_event_id,
    progress_event,
)
from .migration_slots import Slots
from .vm import Vm

Publish = Callable[[str, dict], None]


class MigrationFailed(Exception):
    """The migration did not happen; ``str()`` says why."""


class SlotWaiters:
    """
    The slots of one direction, with a Deferred for each waiter (VDSM's semaphore).

    Cancelling a waiter's Deferred gives up its place in line.
    """

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self._waiters: dict[str, Deferred[None]] = {}

    def acquire(self, key: str) -> Deferred[None]:
        """:returns: a Deferred firing with None once ``key`` holds a slot (maybe at once)."""
        if self.slots.wait(key):
            return succeed(None)
        d: Deferred[None] = Deferred(lambda _: self.release(key))
        self._waiters[key] = d
        return d

    def release(self, key: str) -> None:
        """Give up ``key``'s slot or place in line; wake the waiters that get one."""
        self._waiters.pop(key, None)
        self._wake(self.slots.release(key))

    def set_limit(self, limit: int) -> None:
        """Change the limit; wake the waiters a raised limit lets through."""
        self._wake(self.slots.set_limit(limit))

    def _wake(self, keys: list[str]) -> None:
        for key in keys:
            d = self._waiters.pop(key, None)
            if d is not None:
                d.callback(None)


class OutgoingMigration:
    """
    One VM's outgoing migration. Build it, then ``run()`` it in the background.

    :param source_xml: the domain XML for the destination (after ``before_vm_migrate_source``).
    :param token: the token the destination agent wants, when ``dstToken`` gave none.
    :ivar finished: fires with the final state (``succeeded``, ``failed``, ``cancelled``).
    """

    log = Logger()

    def __init__(
        self,
        vm: Vm,
        params: MigrateParams,
        source_xml: str,
        *,
        hypervisor: ILiveMigration,
        container: VmContainer,
        hooks: IHookRunner,
        connector: IAgentConnector,
        slots: SlotWaiters,
        clock: Any,
        publish: Publish,
        settings: MigrationSettings,
        emulated: bool,
        token: str | None = None,
    ) -> None:
        self.vm = vm
        self.params = params
        self._xml = source_xml
        self._hv = hypervisor
        self._container = container
        self._hooks = hooks
        self._connector = connector
        self._slots = slots
        self._clock = clock
        self._publish = publish
        self._settings = settings
        self._emulated = emulated
        self._token = params.dst_token or token
        self.state = "waiting"
        self.progress = 0
        self.downtime: int | None = None
        self.bandwidth = params.max_bandwidth
        self.error: str | None = None
        self.finished: Deferred[str] = Deferred()
        self._cancelled = False
        self._abort_reason: str | None = None
        self._pending: Deferred[Any] | None = None
        self._link: Any = None
        self._created = False
        self._monitor: LoopingCall | None = None
        self._convergence: convergence.Convergence | None = None

    @property
    def vm_id(self) -> str:
        """The migrating VM's id."""
        return self.vm.vm_id

    @property
    def active(self) -> bool:
        """Whether the migration has not ended yet."""
        return not self.finished.called

    def view(self) -> MigrationView:
        """What ``VM.getMigrationStatus`` shows of this migration."""
        return MigrationView(
            state=self.state,
            progress=self.progress,
            destination=self.params.destination.url,
            downtime=self.downtime,
            bandwidth=self.bandwidth,
            error=self.error,
        )

    # -- control

    def cancel(self) -> None:
        """Stop the migration wherever it is; the VM stays (or gets back) Up here."""
        if not self.active or self._cancelled:
            return
        self._cancelled = True
        self.log.info("vm {vm_id}: migration cancel requested", vm_id=self.vm_id)
        if self._pending is not None:
            self._pending.cancel()
        if self.state == "migrating":
            self._abort()

    async def change_bandwidth(self, mib_per_s: int) -> None:
        """Change the bandwidth (MiB/s, 0 unlimited), now if migrating, else from the start."""
        self.bandwidth = mib_per_s
        if self.state == "migrating":
            try:
                await self._hv.set_migration_speed(self.vm_id, mib_per_s)
            except HypervisorError as e:
                raise MigrationFailed(str(e)) from None

    # -- the job

    async def run(self) -> str:
        """
        Do the migration; never raises.

        :returns: the final state (also what ``finished`` fires with).
        """
        self.log.info(
            "vm {vm_id}: migrating to {dst}", vm_id=self.vm_id, dst=self.params.destination.url
        )
        try:
            await self._take_slot()
            answer = await self._prepare_destination()
            await self._transfer(answer)
        except CancelledError:
            await self._failed("cancelled", "canceled by request")
        except MigrationFailed as e:
            await self._failed("cancelled" if self._cancelled else "failed", str(e))
        except Exception as e:
            # A background job has no caller to raise to: whatever broke, the VM must not be
            # left in Migration Source. The traceback goes to the log.
            self.log.failure("vm {vm_id}: migration crashed", vm_id=self.vm_id)
            await self._failed("failed", f"internal error: {e}")
        else:
            await self._succeeded()
        finally:
            await self._cleanup()
        self.finished.callback(self.state)
        return self.state

    async def _wait(self, d: Deferred[Any]) -> Any:
        """Await ``d``, which :meth:`cancel` may cancel (CancelledError)."""
        if self._cancelled:
            d.cancel()
        self._pending = d
        try:
            return await d
        finally:
            self._pending = None

    async def _take_slot(self) -> None:
        if self.params.outgoing_limit:
            self._slots.set_limit(self.params.outgoing_limit)
        self.state = "waiting"
        await self._wait(self._slots.acquire(self.vm_id))

    async def _prepare_destination(self) -> dict[str, Any]:
        """Connect and have the destination prepare; retry while it is busy (82)."""
        from ..client import RemoteError  # the wire client is only needed here

        self.state = "preparing"
        try:
            self._link = await self._wait(
                self._connector.connect(self.params.destination.url, self._token)
            )
        except CancelledError:
            raise
        except Exception as e:
            raise MigrationFailed(f"cannot reach the destination agent: {_describe(e)}") from None
        while True:
            self.state = "preparing"
            try:
                # Not cancellable: once asked, the destination may have prepared, and only its
                # answer says whether there is something there to clean up.
                result = await self._create_call()
            except RemoteError as e:
                if e.code != 82:
                    raise MigrationFailed(f"the destination refused: {e}") from None
                self.state = "waiting"
                self.log.info("vm {vm_id}: destination busy, retrying", vm_id=self.vm_id)
                await self._wait(deferLater(self._clock, self._settings.retry_timeout, _nothing))
                continue
            except Exception as e:
                # After a timeout the destination may still prepare: clean up there too.
                self._created = isinstance(e, defer.TimeoutError)
                raise MigrationFailed(f"the destination did not prepare: {_describe(e)}") from None
            self._created = True
            if self._cancelled:
                raise CancelledError()
            if not isinstance(result, dict) or not isinstance(result.get("params"), dict):
                raise MigrationFailed(f"the destination answered {result!r}")
            return result["params"]

    def _create_call(self) -> Deferred[Any]:
        elapsed = self._container.elapsed(self.vm)
        params = {
            "vmId": self.vm_id,
            "_srcDomXML": self._xml,
            "migrationDest": "libvirt",
            "elapsedTimeOffset": float(elapsed or 0.0),
            "emulated": self._emulated,
        }
        call: dict[str, Any] = {"vmID": self.vm_id, "params": params}
        if self.params.incoming_limit:
            call["incomingLimit"] = self.params.incoming_limit
        return self._link.call("VM.migrationCreate", call, timeout=self._settings.create_timeout)

    async def _transfer(self, answer: dict[str, Any]) -> None:
        try:
            request = migration_request(self.params, answer)
        except ValueError as e:
            raise MigrationFailed(str(e)) from None
        policy = convergence.plan(self.params.schedule, self._settings, self.vm.spec.memory_kib)
        self._convergence, actions = convergence.begin(policy)
        if self._cancelled:
            raise CancelledError()
        self.state = "migrating"
        await self._apply(actions)
        migrating = self._hv.migrate(self.vm_id, _with_bandwidth(request, self.bandwidth))
        self._publish_progress()
        self._start_monitor()
        try:
            await migrating
        except HypervisorError as e:
            raise MigrationFailed(self._abort_reason or str(e)) from None
        finally:
            self._stop_monitor()

    # -- monitoring

    def _start_monitor(self) -> None:
        self._monitor = LoopingCall(self._sample_safely)
        self._monitor.clock = self._clock
        self._monitor.start(self._settings.monitor_interval, now=False)

    def _stop_monitor(self) -> None:
        if self._monitor is not None and self._monitor.running:
            self._monitor.stop()
        self._monitor = None

    def _sample_safely(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._sample())
        return d.addErrback(
            lambda f: self.log.failure("vm {vm_id}: migration sample", f, vm_id=self.vm_id)
        )

    async def _sample(self) -> None:
        if self._cancelled:
            self._abort()  # the first abort may have come before libvirt's job existed
        try:
            stats = await self._hv.job_stats(self.vm_id)
        except HypervisorError as e:
            self.log.debug("vm {vm_id}: no job stats: {error}", vm_id=self.vm_id, error=e)
            return
        if stats is None or self._convergence is None or self.state != "migrating":
            return
        sample = convergence.Sample.of(stats)
        self._convergence, actions = convergence.observe(self._convergence, sample)
        self.progress = self._convergence.progress
        await self._apply(actions)
        self._publish_progress(stats.downtime)

    async def _apply(self, actions: list[convergence.Action]) -> None:
        for action in actions:
            if isinstance(action, convergence.SetDowntime):
                self.log.info(
                    "vm {vm_id}: migration downtime {ms} ms", vm_id=self.vm_id, ms=action.ms
                )
                self.downtime = action.ms
                try:
                    await self._hv.set_migration_downtime(self.vm_id, action.ms)
                except HypervisorError as e:
                    self.log.warn("vm {vm_id}: cannot set downtime: {e}", vm_id=self.vm_id, e=e)
            elif isinstance(action, convergence.Abort):
                self.log.warn("vm {vm_id}: {reason}", vm_id=self.vm_id, reason=action.reason)
                self._abort_reason = action.reason
                self._abort()
            else:
                self.log.warn("vm {vm_id}: post-copy is not supported; going on", vm_id=self.vm_id)

    def _abort(self) -> None:
        d = self._hv.abort_job(self.vm_id)
        d.addErrback(
            lambda f: self.log.info(
                "vm {vm_id}: abort: {error}", vm_id=self.vm_id, error=f.getErrorMessage()
            )
        )

    def _publish_progress(self, downtime: int | None = None) -> None:
        shown = downtime if downtime is not None else self.downtime
        self._publish(
            migration_status_event_id(self.vm_id), progress_event(self.vm_id, self.progress, shown)
        )

    # -- endings

    async def _succeeded(self) -> None:
        self.state, self.progress = "succeeded", 100
        self.log.info("vm {vm_id}: migration succeeded", vm_id=self.vm_id)
        self._publish_progress()
        self._container.end_outgoing(self.vm, succeeded=True)
        try:
            await self._link.call(
                "VM.migrationFinish", {"vmID": self.vm_id}, timeout=self._settings.create_timeout
            )
        except Exception as e:
            self.log.warn("vm {vm_id}: the destination did not confirm: {e}", vm_id=self.vm_id, e=e)
        await self._hooks.run(
            "after_vm_migrate_source",
            self._xml,
            vm_id=self.vm_id,
            custom=dict(self.vm.metadata.custom),
        )

    async def _failed(self, state: str, reason: str) -> None:
        self.state, self.error = state, reason
        self.log.warn(
            "vm {vm_id}: migration {state}: {reason}", vm_id=self.vm_id, state=state, reason=reason
        )
        if self._created and self._link is not None:
            try:  # as VDSM does: the destination's half goes
                await self._link.call("VM.destroy", {"vmID": self.vm_id}, timeout=60)
            except Exception as e:
                self.log.info("vm {vm_id}: destination cleanup: {e}", vm_id=self.vm_id, e=e)
        self._container.end_outgoing(self.vm, succeeded=False)

    async def _cleanup(self) -> None:
        self._stop_monitor()
        self._slots.release(self.vm_id)
        if self._link is not None:
            try:
                await self._link.close()
            except Exception as e:
                self.log.debug("closing the link: {e}", e=e)


def _with_bandwidth(request: MigrationRequest, bandwidth: int) -> MigrationRequest:
    return replace(request, bandwidth=bandwidth)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _nothing() -> None:
    return None
