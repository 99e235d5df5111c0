"""Fencing: the means to stop, start, restart and query a host, each with proof of the outcome.

Fence agents (stevedore namespace ``vdsmlike.engine.fence``) carry out one fence action on one
host and report a :class:`~engine.fence.result.FenceResult`: ``soft`` asks the host's agent to
restart over the engine's link; ``power`` drives a pluggable power-management driver
(namespace ``vdsmlike.engine.power``; ``process`` is the real one for our test hosts). The
engine's admin actions (``Hosts.fence``, ``Hosts.powerStatus``, ``Hosts.setPowerManagement``)
are in :mod:`engine.fence.actions`. Deciding *when* to fence is not done here.
"""
