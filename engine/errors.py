"""The engine's own typed failures (the store's are in :mod:`engine.store.errors`).

What ``IEngine`` methods fail with, beside the store's ``NotFound``, ``DuplicateName``,
``Conflict`` and ``InvalidValue``:

- :class:`ActionRefused`: the action cannot be carried out now, for a reason worth showing
  (the VM is not Down, no host can run it, another action on the same VM is in progress);
  a refused start carries the scheduler's per-host explanation.
- :class:`EngineNotReady`: the engine is starting (its store not yet open) or stopping.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of the engine's own failures."""


class ActionRefused(EngineError):
    """
    The action was refused; nothing was changed.

    :ivar reason: one or a few sentences saying why, for the API and the event log.
    :ivar explanation: for a refused placement, the scheduler's explanation by host name
        (each a list of sentences: the filters that refused it, with numbers); else None.
    :ivar decision: for a refused placement, the scheduler's whole decision (host ids, names
        and explanations), for the API; else None.
    """

    def __init__(
        self, reason: str, explanation: dict[str, Any] | None = None, decision: Any = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.explanation = explanation
        self.decision = decision


class ActionInProgress(ActionRefused):
    """Another action holds the VM (or host): conflicting actions run one at a time.

    :ivar job_id: the job holding it.
    """

    def __init__(self, reason: str, job_id: Any = None) -> None:
        super().__init__(reason)
        self.job_id = job_id


class EngineNotReady(EngineError):
    """The engine has not finished starting (or is stopping): try again shortly."""
