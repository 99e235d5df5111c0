"""The cluster simulator: the engine's decision code on virtual time, against a simulated world.

A scenario (``tests/scenarios/<name>/``: ``README``, ``scenario.yml``, ``expected.log``) starts a
cluster of simulated hosts and VMs, then changes the world at given seconds (a host loses power,
its network, its agent; a fence device fails; an admin asks for maintenance; the engine
restarts). The real :class:`~engine.decide.cluster.ClusterManager`, host state machine and
scheduler decide; the world carries out their commands with durations. The result is the
engine's event log, compared exactly with ``expected.log``, as Proxmox's ha-manager tests do.

Run one and print its log: ``python -m engine.sim run tests/scenarios/<name>``; rewrite its
golden log: ``... run --update``; check them all: ``python -m engine.sim check tests/scenarios``.
See ``docs/ha.md`` for how to write one.
"""
