"""What the MOM policy thread needs from the agent it runs in.

Methods are called on the reactor thread (the policy thread hops there with
``blockingCallFromThread``) and return Deferreds; they fail with the agent's RPC errors.
"""

from __future__ import annotations

from zope.interface import Interface


class IMomAgent(Interface):
    """The agent as MOM sees it: VM statistics in, controls out (VDSM's verbs, in-process)."""

    def vm_stats():
        """:returns: a Deferred firing with the ``Host.getAllVmStats`` list."""

    def io_tune_policies():
        """:returns: a Deferred firing with ``Host.getAllVmIoTunePolicies``:
        ``{vmId: {"policy": [...], "current_values": [...]}}``."""

    def set_balloon_target(vm_id, kib):
        """``VM.setBalloonTarget``: a Deferred firing when libvirt has the new target."""

    def set_cpu_tune(vm_id, quota, period):
        """``VM.setCpuTuneQuota`` and ``VM.setCpuTunePeriod`` together."""

    def set_io_tune(vm_id, tunables):
        """``VM.setIoTune`` with ``[{"name", "path", "ioTune": {...}}]``."""

    def set_ksm_tune(params):
        """``Host.setKsmTune`` with ``{"run": 1, "pages_to_scan": 64, ...}``."""
