"""The engine's seams: zope interfaces for its I/O (the store and the links to agents).

Decision code (``engine/decide/``) never sees these: it takes snapshots and returns actions.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface  # noqa: F401

# -- store (IStore) --------------------------------------------------------------------------


class IStore(Interface):
    """
    The engine's inventory, audit log, jobs and accounts, in PostgreSQL.

    Rows are the frozen dataclasses of ``engine.store.rows`` (``HostStatic``, ``HostDynamic``,
    ``HostStatistics``, ``Host``, ``VmStatic``, ``VmDynamic``, ``VmStatistics``, ``Vm``,
    ``Job``, ``User``, ``Session``) and of ``engine.store.auditlog`` (``NewAuditEvent``,
    ``AuditEvent``). Every method returns a Deferred and runs as one transaction: a method that
    fails has changed nothing. Failures are the typed errors of ``engine.store.errors``:
    ``NotFound`` (unknown id or name), ``DuplicateName``, ``Conflict``, ``InvalidValue`` (a
    value the schema refuses), ``StoreUnavailable`` (PostgreSQL unreachable, or the connection
    died while committing, so the outcome is unknown). A connection lost to a PostgreSQL
    restart is replaced transparently. Every timestamp written is the store clock's time.
    """

    def transaction(fn, *, idempotent=False):
        """
        Run several operations atomically.

        :param fn: ``async def fn(tx)``; ``tx`` (``engine.store.transaction.StoreTransaction``)
            has every method below as a coroutine on one transaction. ``fn`` may run twice if
            the connection is lost before commit, so it must act only through ``tx``.
        :param idempotent: retry even when the connection died while committing.
        :returns: a Deferred firing with ``fn``'s result once committed; failing with what it
            raised, after rolling back.
        """

    # Hosts: static (configuration), dynamic (runtime state), statistics.

    def add_host(host, *, dynamic=None):
        """
        Define a host from a ``HostStatic`` (and a ``HostDynamic``, default ``Installing``).

        :returns: a Deferred firing with the ``Host``; failing with ``DuplicateName``.
        """

    def get_host(host_id):
        """:returns: a Deferred firing with the ``Host``; failing with ``NotFound``."""

    def get_host_by_name(name):
        """:returns: a Deferred firing with the ``Host``; failing with ``NotFound``."""

    def list_hosts():
        """:returns: a Deferred firing with every ``Host``, by name."""

    def update_host(host_id, **changes):
        """
        Change any of ``name``, ``address``, ``port``, ``token``.

        :returns: a Deferred firing with the ``Host``; failing with ``NotFound``,
            ``DuplicateName``, or ``TypeError`` for a field that cannot change.
        """

    def remove_host(host_id):
        """
        Remove a host and its dynamic and statistics rows; VMs pinned to it are unpinned.

        :returns: a Deferred firing with None; failing with ``NotFound``, or ``Conflict``
            while a VM's ``run_on_host`` or ``migrating_to_host`` is this host.
        """

    def update_host_dynamic(host_id, **changes):
        """
        Change any ``HostDynamic`` field but ``host_id`` (``status``, ``status_reason``,
        ``last_seen``, ``capabilities``, ``cpu_count``, ``mem_total_mib``).

        :returns: a Deferred firing with the ``Host``; failing with ``NotFound``.
        """

    def record_host_statistics(sample):
        """
        Store a ``HostStatistics`` as the host's latest and append it to the history (older
        than the retention is dropped).

        :returns: a Deferred firing with None; failing with ``NotFound``.
        """

    def host_statistics_history(host_id, *, since=None, limit=1000):
        """:returns: a Deferred firing with the latest ``HostStatistics`` samples, oldest
        first."""

    def get_power_management(host_id):
        """:returns: a Deferred firing with the host's ``HostPowerManagement`` (the disabled
        defaults if it has none); failing with ``NotFound``."""

    def set_power_management(settings):
        """
        Replace a host's power management with a ``HostPowerManagement``.

        :returns: a Deferred firing with the stored ``HostPowerManagement``; failing with
            ``NotFound``, or ``InvalidValue`` (enabled without a driver).
        """

    # VMs: static (definition), dynamic (runtime state), statistics.

    def add_vm(vm, *, dynamic=None):
        """
        Define a VM from a ``VmStatic`` (and a ``VmDynamic``, default ``Down``; an external VM
        passes its observed state).

        :returns: a Deferred firing with the ``Vm``; failing with ``DuplicateName``,
            ``NotFound`` (pinned or running host), ``InvalidValue``.
        """

    def get_vm(vm_id):
        """:returns: a Deferred firing with the ``Vm``; failing with ``NotFound``."""

    def get_vm_by_name(name):
        """:returns: a Deferred firing with the ``Vm``; failing with ``NotFound``."""

    def list_vms(*, host_id=None):
        """:returns: a Deferred firing with every ``Vm`` by name, or those running on or
        migrating to ``host_id``."""

    def update_vm(vm_id, **changes):
        """
        Change any ``VmStatic`` field but ``id``, ``created``, ``updated``.

        :returns: a Deferred firing with the ``Vm``; failing with ``NotFound``,
            ``DuplicateName``, ``InvalidValue``, or ``TypeError``.
        """

    def remove_vm(vm_id):
        """:returns: a Deferred firing with None; failing with ``NotFound``."""

    def set_vm_dynamic(dynamic, *, force=False):
        """
        Replace a VM's ``VmDynamic``, in ``notify_time`` order: with ``last_notify_time`` set,
        the write is refused if the stored one is newer; without it, it applies and keeps the
        stored one. ``force`` writes unconditionally, ``last_notify_time`` included (use it
        when the VM changes host: notify clocks are per host).

        :returns: a Deferred firing with True if written, False if refused as stale; failing
            with ``NotFound``.
        """

    def record_vm_statistics(samples):
        """
        Store a sequence of ``VmStatistics`` (e.g. one ``Host.getAllVmStats``) as each VM's
        latest and append them to the history; unknown VMs are skipped.

        :returns: a Deferred firing with the number recorded.
        """

    def vm_statistics_history(vm_id, *, since=None, limit=1000):
        """:returns: a Deferred firing with the latest ``VmStatistics`` samples, oldest
        first."""

    # The audit log.

    def add_event(event):
        """
        Record a ``NewAuditEvent`` (build one with ``engine.store.auditlog.audit_event``).

        :returns: a Deferred firing with the ``AuditEvent`` (with ``id`` and ``time``).
        """

    def list_events(*, since_id=None, before_id=None, min_severity=None, host_id=None,
                    vm_id=None, job_id=None, event_type=None, limit=100):
        """:returns: a Deferred firing with the newest matching ``AuditEvent`` list, newest
        first (``since_id``/``before_id`` exclusive; ``min_severity`` a ``Severity``)."""

    def purge_events(older_than):
        """:returns: a Deferred firing with the number of events older than that deleted."""

    # Jobs.

    def create_job(action, *, target_kind, target_id=None, idempotency_key=None, job_id=None):
        """
        Create a ``pending`` job; with an ``idempotency_key`` already used, find that job.

        :returns: a Deferred firing with ``(Job, created)``; failing with ``Conflict`` when the
            key belongs to a job for another action or target.
        """

    def get_job(job_id):
        """:returns: a Deferred firing with the ``Job``; failing with ``NotFound``."""

    def list_jobs(*, status=None, target_id=None, limit=100):
        """:returns: a Deferred firing with the newest matching ``Job`` list, newest first."""

    def update_job(job_id, **changes):
        """
        Change any of ``status`` (a ``JobStatus``), ``progress`` (0..100), ``result`` (any
        JSON value), ``error``.

        :returns: a Deferred firing with the ``Job``; failing with ``NotFound``, or
            ``Conflict`` once the job has succeeded or failed.
        """

    # Affinity groups (engine.store.affinity.AffinityGroupRow, members as id tuples).

    def add_affinity_group(group):
        """
        Store an ``AffinityGroupRow`` with its member VMs and hosts.

        :returns: a Deferred firing with the stored row; failing with ``DuplicateName``,
            ``NotFound`` (a member that does not exist) or ``InvalidValue``.
        """

    def get_affinity_group(group_id):
        """:returns: a Deferred firing with the ``AffinityGroupRow``; failing with ``NotFound``."""

    def list_affinity_groups():
        """:returns: a Deferred firing with every ``AffinityGroupRow``, by name."""

    def update_affinity_group(group_id, **changes):
        """
        Change a group's fields; ``vms`` and ``hosts`` replace its members whole.

        :returns: a Deferred firing with the row; failing with ``NotFound``, ``DuplicateName``.
        """

    def remove_affinity_group(group_id):
        """:returns: a Deferred firing with None; failing with ``NotFound``."""

    # Users and sessions.

    def create_user(name, password):
        """
        Create an account; the password is stored as a salted scrypt hash.

        :returns: a Deferred firing with the ``User``; failing with ``DuplicateName``.
        """

    def verify_password(name, password):
        """:returns: a Deferred firing with the ``User``, or None for a wrong password or an
        unknown name alike."""

    def set_password(name, password):
        """:returns: a Deferred firing with None; failing with ``NotFound``."""

    def create_session(user_name, *, ttl):
        """
        Open a session lasting ``ttl`` seconds.

        :returns: a Deferred firing with ``(token, Session)``; only a hash of the token is
            stored. Failing with ``NotFound`` for an unknown user.
        """

    def lookup_session(token):
        """:returns: a Deferred firing with the ``Session``, or None if unknown or expired."""

    def expire_session(token):
        """:returns: a Deferred firing with None once the session is ended (unknown is fine)."""

    def purge_sessions():
        """:returns: a Deferred firing with the number of expired sessions deleted."""

# -- host link (IHostLink) -------------------------------------------------------------------

from twisted.application.service import IService  # noqa: E402 - kept within this section


class IHostLink(IService):
    """
    The engine's link to one host's agent: one JSON-RPC connection kept up for as long as the
    service runs, reconnecting with backoff, subscribed to all of the agent's events.

    An implementation takes a *listener* in its constructor: a callable given one
    ``engine.hostlink.LinkEvent`` per thing that happens, in order, each from its own reactor
    turn (never re-entrantly from inside a call to the link, so the listener may call or stop
    the link). The kinds (``LinkEventKind``): ``connected`` (with the capabilities),
    ``connect_failed`` (an attempt failed: reason, attempt number, seconds until the next),
    ``link_lost``, ``heartbeat_missed`` (with the number missed in a row), ``heartbeat_ok``
    (answered again after misses), ``event`` (an agent event: ``event_id``, ``params``). The
    first five are also ``engine.decide.hoststate.HostEvent`` names, ready for the host state
    machine (``LinkEvent.host_event``).

    ``startService`` starts connecting; ``stopService`` returns a Deferred that fires once the
    connection is closed and nothing is scheduled; no event is reported after it is called.
    """

    url = Attribute("The agent's WebSocket URL, e.g. ``ws://127.0.0.1:54321/jsonrpc``.")
    connected = Attribute(
        "True while the link is usable: WebSocket open, events subscribed, capabilities read."
    )
    capabilities = Attribute(
        "The agent's ``Host.getCapabilities`` result from the latest connection, or None."
    )

    def call(method, params=None, timeout=None):
        """
        Call a verb on the agent.

        :param method: the verb, e.g. ``"Host.getAllVmStats"``.
        :param params: a dict (named) or a list (positional); None sends ``{}``.
        :param timeout: seconds to wait for the answer; None uses the link's default.
        :returns: a Deferred firing with the result. It fails with
            ``vdsmlike.client.RemoteError`` when the agent answers with an error,
            ``engine.hostlink.LinkDown`` at once when the link is not connected and when the
            connection is lost before the answer, ``engine.hostlink.CallTimeout`` when no answer
            comes in time (a late answer is then dropped; the agent may still have acted).
        """

    def when_connected(fail_after_failures=None):
        """
        Wait for the link to be connected.

        :param fail_after_failures: fail after this many connection attempts fail in a row;
            None waits for as long as the link runs.
        :returns: a Deferred firing with the capabilities (at once if connected); it fails with
            ``engine.hostlink.LinkDown`` (carrying the last attempt's reason) after that many
            failures, or when the link is stopped.
        """


# -- the engine's operations (IEngine) -------------------------------------------------------


class IEngine(Interface):
    """
    What the engine does, as the admin API and the web console call it.

    Results are the store's rows (``engine.store.rows``: ``Host``, ``Vm``, ``Job``;
    ``engine.store.auditlog.AuditEvent``); the API layer turns them into wire shapes. Every
    method returns a Deferred. Failures are typed: the store's ``NotFound``,
    ``DuplicateName``, ``Conflict``, ``InvalidValue``, and ``engine.errors.ActionRefused``
    (with a reason and, for a refused start, the scheduler's per-host explanation). Actions
    on VMs and hosts are jobs: they return the persisted ``Job`` at once (the same job again
    for a repeated ``idempotency_key``) and progress is published as events.
    """

    def add_host(name, address, *, port=54321, token=""):
        """Register a host and start connecting to its agent; fires with the ``Host``."""

    def list_hosts():
        """Fires with every ``Host``, by name."""

    def get_host(host_id):
        """Fires with the ``Host``."""

    def remove_host(host_id):
        """Forget a host (refused with ``Conflict`` while VMs run there); fires with None."""

    def maintenance(host_id, *, idempotency_key=None, move_back=None):
        """Move the host's VMs away and put it into Maintenance; fires with the ``Job``.
        ``move_back``: migrate them back when it is activated (None: the configured default)."""

    def activate(host_id, *, idempotency_key=None):
        """Bring a host out of Maintenance; fires with the ``Job``."""

    def get_power_management(host_id):
        """Fires with the host's ``HostPowerManagement`` (secrets included: the API hides
        them)."""

    def set_power_management(host_id, *, enabled, driver, options, fencing_enabled=True):
        """
        Configure a host's power management: the driver (``vdsmlike.engine.power``) and its
        options, checked by the driver before they are stored.

        :returns: a Deferred firing with the stored ``HostPowerManagement``; failing with
            ``NotFound``, or ``InvalidValue`` for an unknown driver or options it refuses.
        """

    def power_status(host_id):
        """
        Ask the host's power status now: through its power driver when power management is
        enabled, else from its agent (``soft``). Not a job, not audited.

        :returns: a Deferred firing with an ``engine.fence.result.FenceResult``.
        """

    def fence(host_id, action, *, agent=None, force=False, idempotency_key=None):
        """
        Fence a host, as a job: ``restart`` (its agent, ``soft``), ``status``, ``off``, ``on``,
        ``reboot`` (``power``). Each step is an audit event with its proof; an ``off`` proven
        done takes the host Down and its VMs Down.

        :param agent: ``soft`` or ``power``; None picks ``soft`` for ``restart``, ``power``
            for the others (``soft`` for ``status`` without power management).
        :param force: power off or reboot a host that is Up with running VMs.
        :returns: a Deferred firing with the ``Job`` (it fails when the fence is not proven
            done; its result is the ``FenceResult``); failing with ``NotFound``,
            ``InvalidValue`` (an action the agent cannot do), ``Conflict`` (no power
            management, or an Up host with VMs without ``force``), ``ActionInProgress``.
        """

    def add_vm(spec):
        """
        Define a VM.

        :param spec: ``name``, ``memory_mib``, ``vcpus``, and optionally ``kernel``, ``initrd``,
            ``cmdline``, ``disks``, ``nics``, ``custom``, ``ha``, ``ha_priority``,
            ``pinned_host`` (an id).
        :returns: a Deferred firing with the ``Vm``.
        """

    def list_vms(*, host_id=None):
        """Fires with every ``Vm`` (or those on one host), by name."""

    def get_vm(vm_id):
        """Fires with the ``Vm``."""

    def update_vm(vm_id, changes):
        """Change a VM's definition (takes effect at its next start); fires with the ``Vm``."""

    def remove_vm(vm_id):
        """Forget a Down VM (``Conflict`` while it runs); fires with None."""

    def start_vm(vm_id, *, host_id=None, idempotency_key=None):
        """Schedule (or use ``host_id``) and start; fires with the ``Job``."""

    def stop_vm(vm_id, *, idempotency_key=None):
        """Power off; fires with the ``Job``."""

    def shutdown_vm(vm_id, *, idempotency_key=None):
        """Ask the guest to shut down; fires with the ``Job``."""

    def pause_vm(vm_id, *, idempotency_key=None):
        """Fires with the ``Job``."""

    def resume_vm(vm_id, *, idempotency_key=None):
        """Fires with the ``Job``."""

    def migrate_vm(vm_id, *, host_id=None, idempotency_key=None):
        """Live-migrate to ``host_id`` or the scheduler's pick; fires with the ``Job``."""

    def read_console(vm_id, *, offset=None, size=None):
        """
        Read a VM's serial console once, from the host it runs on (the agent's
        ``VM.getConsoleOutput``: ``offset`` None for the tail, ``size`` None for its default).

        :returns: a Deferred firing with ``{data, offset, next, size, reset, host}`` (``host``:
            the host's id); failing with ``NotFound`` for an unknown VM, ``Conflict`` when it
            runs on no host, its host is not reachable, or its agent refuses (no file-backed
            serial port).
        """

    def watch_console(vm_id, listener, *, offset=None):
        """
        Stream a VM's serial console: ``listener({"vm", "data", "offset", "next", "reset"})``
        is called on the reactor thread for each new piece of output, in order, whatever host
        the VM runs on (a piece from a new log, after a restart or a migration, has ``reset``
        true and ``offset`` 0). One poller per VM serves all its watchers.

        :param offset: where to start; None: the current end of the log.
        :returns: a Deferred firing with an ``engine.consolerelay.ConsoleWatch`` (``start``:
            where its pieces start; ``stop()`` ends it); failing with ``NotFound``, or
            ``Conflict`` when the agent refuses the console.
        """

    def add_affinity_group(spec):
        """
        Define an affinity group: ``name`` and any of ``description``, ``vm_polarity``
        (``positive`` together, ``negative`` apart, ``none``), ``hard``, ``vms`` (ids),
        ``hosts`` (ids), ``host_polarity`` (``positive`` only on, ``negative`` never on),
        ``hosts_hard`` (None: as ``hard``), ``priority``. Checked against the other groups
        before it is stored; an ``AFFINITY_GROUP_ADDED`` event.

        :returns: a Deferred firing with the ``AffinityGroupRow``; failing with ``Conflict``
            (a contradiction between hard rules, naming the groups), ``DuplicateName``,
            ``NotFound`` (a member) or ``InvalidValue``.
        """

    def list_affinity_groups():
        """Fires with every ``AffinityGroupRow``, by name."""

    def get_affinity_group(group_id):
        """Fires with the ``AffinityGroupRow``; fails with ``NotFound``."""

    def update_affinity_group(group_id, changes):
        """Change a group (``vms``, ``hosts`` replace the members), checked as ``add`` is;
        fires with the ``AffinityGroupRow``."""

    def remove_affinity_group(group_id):
        """Forget a group; fires with None."""

    def list_events(**filters):
        """The audit log, newest first (the store's ``list_events`` filters)."""

    def list_jobs(**filters):
        """Jobs, newest first."""

    def get_job(job_id):
        """Fires with the ``Job``."""

    def subscribe(listener):
        """
        Receive live changes: ``listener(kind, payload)`` with ``kind`` one of ``"event"``
        (an ``AuditEvent``), ``"host"`` (a ``Host``), ``"vm"`` (a ``Vm``), ``"job"`` (a
        ``Job``), called on the reactor thread after the change is committed.

        :returns: a function that unsubscribes.
        """
