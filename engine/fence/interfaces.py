"""Fencing's seams: fence agents (``IFenceAgent``) and power-management drivers (``IPowerDriver``).

Both are stevedore plugins. Fence agents register under :data:`FENCE_NAMESPACE` and are
created once per engine with the keyword arguments ``reactor`` and ``settings`` (a
:class:`FenceSettings`); power drivers register under :data:`POWER_NAMESPACE` as a factory
(``IPowerDriverFactory``, usually the class itself) called per action with one host's options.

Every method returns a Deferred firing with a :class:`~engine.fence.result.FenceResult` and
never failing for anything the host did: a fence that cannot be carried out or proven is a
result with outcome ``failed`` or ``unknown``, with the reason in its message and proof. Only
a bug fails the Deferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from zope.interface import Attribute, Interface

#: Where fence agents register (``soft``, ``power``).
FENCE_NAMESPACE = "vdsmlike.engine.fence"
#: Where power-management drivers register (``process``).
POWER_NAMESPACE = "vdsmlike.engine.power"


@dataclass(frozen=True)
class FenceSettings:
    """
    How long fence agents wait, in seconds (every agent is given these and reads its own).

    :ivar restart_timeout: ``soft``: how long a restarted agent has to answer again, as a new
        instance.
    :ivar exit_delay: ``soft``: how long the agent waits after answering ``Host.restart``
        before it exits (so the answer leaves first).
    :ivar call_timeout: the most one call to an agent may wait for its answer.
    :ivar poll_interval: how often an agent looks again while it waits.
    """

    restart_timeout: float = 60.0
    exit_delay: float = 0.5
    call_timeout: float = 10.0
    poll_interval: float = 0.1


@dataclass(frozen=True)
class PowerSettings:
    """
    A host's power management, as the store keeps it.

    :ivar enabled: whether power fencing may be used on the host.
    :ivar driver: the power driver's name (``POWER_NAMESPACE``).
    :ivar options: the driver's options (secrets included: never sent back by the API).
    :ivar fencing_enabled: whether the engine may fence the host *by itself* (admin actions
        do not look at it).
    """

    enabled: bool = False
    driver: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    fencing_enabled: bool = True


@dataclass(frozen=True)
class FenceTarget:
    """
    The host a fence agent acts on.

    :ivar id: the host's id.
    :ivar name: its name, for messages.
    :ivar link: the engine's ``IHostLink`` to its agent (None: none).
    :ivar power: its power management (None: not configured).
    """

    id: UUID
    name: str
    link: Any = None
    power: PowerSettings | None = None


class IFenceAgent(Interface):
    """One way of fencing a host (a plugin under ``vdsmlike.engine.fence``)."""

    name = Attribute("The agent's registered name, e.g. ``soft``.")
    actions = Attribute("The ``FenceAction`` values it supports, e.g. ``{'restart', 'status'}``.")

    def fence(host, action):
        """
        Carry out ``action`` on ``host`` (a :class:`FenceTarget`) and observe the outcome.

        :param action: one of :attr:`actions`.
        :returns: a Deferred firing with the ``FenceResult`` (its ``agent`` set to
            :attr:`name`); ``done`` only with proof.
        :raises ValueError: at once, for an action the agent does not support.
        """


class IPowerDriver(Interface):
    """
    One host's power switch (a driver under ``vdsmlike.engine.power``, created per action
    with that host's options). Each method observes before it answers: ``status`` reports what
    it sees; ``off`` is ``done`` only once nothing of the host runs any more; ``on`` once the
    host runs and announced itself. All blocking work happens off the reactor thread.
    """

    name = Attribute("The driver's registered name, e.g. ``process``.")

    def status():
        """:returns: a Deferred firing with the ``FenceResult`` of action ``status``."""

    def off():
        """:returns: a Deferred firing with the ``FenceResult`` of action ``off``."""

    def on():
        """:returns: a Deferred firing with the ``FenceResult`` of action ``on``."""


class IPowerDriverFactory(Interface):
    """What a power driver registers: it checks options, and makes a driver for one host."""

    name = Attribute("The driver's registered name.")
    secret_options = Attribute(
        "Option names whose values are secrets (passwords): stored, never sent back."
    )

    def check_options(options):
        """
        Validate options before they are stored.

        :returns: the options, normalized (defaults filled in).
        :raises ValueError: naming the option that is wrong and why.
        """

    def __call__(options, *, reactor):
        """:returns: an ``IPowerDriver`` for one host with these (checked) options."""
