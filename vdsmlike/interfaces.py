"""Contracts between the agent's core and its I/O adapters; interfaces only, no code.

Every method that touches the outside world returns a Deferred. Implementations:
``LibvirtHypervisor`` (real, any libvirt URI) and ``MemoryHypervisor`` (in-memory twin with the
same errors and events) for :class:`IHypervisor` and :class:`ILiveMigration`;
``ThreadPoolRunner`` and ``SynchronousRunner`` for :class:`IBlockingRunner`;
``WebSocketAgentConnector`` for :class:`IAgentConnector`.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IBlockingRunner(Interface):
    """Runs blocking callables off the reactor thread, serialized per key."""

    def run(key, fn, *args, **kwargs):
        """
        Call ``fn(*args, **kwargs)`` on a worker thread after every earlier call with the same key.

        Calls with different keys may run concurrently. ``key`` is usually a VM id; ``None`` means
        "no ordering constraint".

        :returns: a Deferred firing with ``fn``'s result in the reactor thread, or failing with the
            exception ``fn`` raised.
        """

    def start():
        """Start the worker threads."""

    def stop():
        """
        Stop accepting work and join the worker threads.

        :returns: a Deferred firing once the threads are gone.
        """


class IHypervisor(Interface):
    """
    A host's hypervisor: domains by UUID, their lifecycle, and events about them.

    Domains are *transient* (created from XML, gone once destroyed), as in VDSM. VM ids are
    domain UUID strings in lower case. Every method fails with
    :class:`vdsmlike.virt.errors.DomainNotFound` for an unknown id and with
    :class:`vdsmlike.virt.errors.HypervisorError` (carrying libvirt's message) for anything else
    the hypervisor refuses; no other exception types escape.
    """

    uri = Attribute("The connection URI, e.g. 'test:///default' or 'qemu:///embed?root=...'.")

    def open():
        """
        Connect, start delivering events.

        :returns: a Deferred firing with None once connected.
        """

    def close():
        """
        Stop delivering events and disconnect. Running domains keep running.

        :returns: a Deferred firing with None.
        """

    def set_event_listener(listener):
        """
        Deliver :class:`vdsmlike.virt.events.DomainEvent` objects to ``listener(event)``.

        The listener is always called in the reactor thread, in the order libvirt reported the
        events. One listener at a time; ``None`` removes it.
        """

    def host_info():
        """
        Describe the host as the hypervisor sees it.

        :returns: a Deferred firing with a :class:`vdsmlike.virt.events.HostInfo`.
        """

    def list_domains():
        """
        List every domain the hypervisor knows, running or paused (used for recovery).

        :returns: a Deferred firing with a list of :class:`vdsmlike.virt.events.DomainInfo`.
        """

    def create(xml, paused):
        """
        Create and start a transient domain from ``xml``; started paused if ``paused``.

        On failure nothing is left behind (no domain defined or running).

        :returns: a Deferred firing with the new domain's :class:`DomainInfo`.
        :raises: ``DomainExists`` if a domain with that UUID or name exists, ``HypervisorError``.
        """

    def destroy(vm_id, graceful):
        """
        Stop a domain at once (``graceful`` sends SIGTERM first, then SIGKILL, as
        ``VIR_DOMAIN_DESTROY_GRACEFUL`` does). A transient domain is then gone.

        :returns: a Deferred firing with None.
        """

    def shutdown(vm_id):
        """Ask the guest to power off (ACPI). :returns: a Deferred firing with None at once."""

    def reboot(vm_id):
        """Ask the guest to reboot (ACPI). :returns: a Deferred firing with None."""

    def reset(vm_id):
        """Reset the virtual hardware without asking the guest. :returns: a Deferred."""

    def suspend(vm_id):
        """Pause the guest's vCPUs. :returns: a Deferred firing with None."""

    def resume(vm_id):
        """Resume the guest's vCPUs. :returns: a Deferred firing with None."""

    def set_memory(vm_id, kib):
        """Set the balloon target of a running domain, in KiB. :returns: a Deferred."""

    def get_xml(vm_id):
        """:returns: a Deferred firing with the live domain XML (str)."""

    def set_metadata(vm_id, xml):
        """
        Replace our ``<metadata>`` element (``vdsmlike.vm.domxml.METADATA_NS``) on the live domain
        with ``xml``, so that a restarted agent recovers it. :returns: a Deferred.
        """

    def attach_device(vm_id, xml):
        """Hot-plug one device given as XML into a running domain. :returns: a Deferred."""

    def detach_device(vm_id, xml):
        """Hot-unplug one device given as XML from a running domain. :returns: a Deferred."""

    def get_cpu_tune(vm_id):
        """
        Read a domain's vCPU bandwidth (libvirt ``schedulerParameters()``) and vCPU count.

        :returns: a Deferred firing with a :class:`vdsmlike.virt.events.CpuTune`; a new domain
            has an unlimited quota (-1) and a period of 100000 µs.
        """

    def set_cpu_tune(vm_id, quota=None, period=None):
        """
        Change a running domain's vCPU bandwidth at once (``setSchedulerParameters`` with
        ``vcpu_quota`` and ``vcpu_period``, live); None leaves a value alone.

        libvirt's rules (:mod:`vdsmlike.virt.tuning`): a negative quota means unlimited (-1), a
        quota or period of 0 changes nothing, else the quota is 1000-17592186044415 µs and the
        period 1000-1000000 µs.

        :returns: a Deferred firing with None; failing with ``HypervisorError`` for a value out of
            range, and then nothing changed.
        """

    def get_block_io_tune(vm_id, device):
        """
        Read the throttle limits of one disk (``blockIoTune``, live).

        :param device: the disk's target dev, e.g. ``"vda"``.
        :returns: a Deferred firing with ``{key: int}`` for the six keys of
            :data:`vdsmlike.virt.tuning.IO_TUNE_KEYS` (0: no limit); failing with
            ``HypervisorError`` for a domain without that disk.
        """

    def set_block_io_tune(vm_id, device, values):
        """
        Set the throttle limits of one disk at once (``setBlockIoTune``, live).

        :param values: some of the six keys of :data:`vdsmlike.virt.tuning.IO_TUNE_KEYS`; the
            disk's limits become exactly these, the keys left out 0 (no limit).
        :returns: a Deferred firing with None; failing with ``HypervisorError`` for an unknown
            disk or key, a negative value or one above 10**15, or a non-zero total limit with a
            non-zero read or write one of the same unit; nothing changed then.
        """

    def bulk_stats():
        """
        Sample every running or paused domain at once (libvirt ``getAllDomainStats``).

        :returns: a Deferred firing with ``{vm_id: {libvirt stats key: value}}`` using libvirt's
            flat keys (``cpu.time``, ``balloon.current``, ``block.0.rd.bytes``, ...), plus
            ``"state.state"``. Domains that vanish mid-call are omitted, never an error.
        """


class ILiveMigration(Interface):
    """
    Live migration of a hypervisor's domains: the outgoing half on the source, the incoming
    half on the destination. Provided by the same objects as :class:`IHypervisor`, with the
    same errors; a separate seam because it is a separate concern (``IHypervisor`` stays narrow).

    Real libvirt migrates peer-to-peer, daemon to daemon (``VIR_MIGRATE_LIVE |
    VIR_MIGRATE_PEER2PEER``): the destination's domain appears and resumes by itself, with
    STARTED/MIGRATED and RESUMED/MIGRATED events there, and the source's ends with
    STOPPED/MIGRATED. Adapters that cannot migrate (``migration_support.emulated``) emulate it
    (:mod:`vdsmlike.vm.migration_emulation`) with the same events and errors.
    """

    migration_support = Attribute(
        "A vdsmlike.vm.migration.MigrationSupport: can it send, receive, and is it emulated."
    )

    def migratable_xml(vm_id):
        """
        :returns: a Deferred firing with the domain's XML as a destination should define it
            (libvirt's ``VIR_DOMAIN_XML_MIGRATABLE``).
        """

    def migrate(vm_id, request):
        """
        Migrate a running or paused domain live to ``request.dest_uri``
        (a :class:`vdsmlike.vm.migration.MigrationRequest`).

        :returns: a Deferred firing with None once the domain runs on the destination and is
            gone here; failing with ``HypervisorError`` (libvirt's message) when the migration
            failed or was aborted, and then the domain still runs here.
        """

    def job_stats(vm_id):
        """
        :returns: a Deferred firing with the running migration's
            :class:`vdsmlike.vm.migration.JobStats`, or None when no migration job runs.
        """

    def abort_job(vm_id):
        """
        Abort the domain's running migration; its ``migrate`` Deferred then fails.

        :returns: a Deferred firing with None; failing with ``HypervisorError`` when no job runs.
        """

    def set_migration_speed(vm_id, mib_per_s):
        """Limit the migration bandwidth, MiB/s (0: unlimited), now or for the next migration."""

    def set_migration_downtime(vm_id, ms):
        """Allow the final switch-over to pause the guest up to ``ms`` milliseconds."""

    def prepare_incoming(xml):
        """
        Get ready to receive the domain ``xml`` describes (the destination's half).

        Real libvirt needs nothing (the source's daemon creates the domain here); an emulating
        adapter defines it paused, as QEMU waits with ``-incoming``.

        :returns: a Deferred firing with None.
        """

    def finish_incoming(vm_id):
        """
        Complete a received domain once the source says its half is done: an emulating adapter
        resumes it (RESUMED/MIGRATED); real libvirt has done so already.

        :returns: a Deferred firing with the domain's :class:`DomainInfo` (running, or paused
            when a paused guest was migrated); failing with ``DomainNotFound`` if it never
            arrived.
        """


class IAgentConnector(Interface):
    """Opens JSON-RPC links to other agents (a migration's destination)."""

    def connect(url, token):
        """
        :returns: a Deferred firing with a connected client offering ``call(method, params,
            timeout=...)`` and ``close()`` (:class:`vdsmlike.client.AgentClient`), or failing
            when the agent cannot be reached.
        """


class IHookRunner(Interface):
    """
    Runs the hooks of one hook point: executable scripts (VDSM's protocol) and in-process
    plugins, in the documented order, each seeing the payload as its predecessors left it.
    """

    def run(point, payload, *, vm_id=None, custom=None, params=None):
        """
        Run every hook of ``point``.

        :param point: a hook point name, e.g. ``"before_vm_start"``.
        :param payload: domain or device XML (str), a JSON-able object for the ``get_*``,
            network and disk-prepare points, or None (an empty payload file).
        :param vm_id: the VM's id, given to hooks as ``vmId``.
        :param custom: the VM's (or device's) custom properties, given as environment variables.
        :param params: extra variables for the hooks (VDSM's ``params``).
        :returns: a Deferred firing with a :class:`hooks.runner.HookResult` (the final payload,
            the errors, launch flags for ``before_vm_start``). For a ``before_*`` point any
            failing hook makes it fail with :class:`vdsmlike.api.errors.HookError` (1500)
            carrying the hook's stderr; ``after_*`` failures are logged and never fail it.
        """

    def installed():
        """:returns: ``{point: {script name: {"checksum": sha256 hex}}}`` for getCapabilities."""
