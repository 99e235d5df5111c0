"""``Host.setMOMPolicy`` and ``Host.setMOMPolicyParameters``: the embedded MOM's policy store,
changed at runtime by the engine, with VDSM's semantics."""

from __future__ import annotations

from typing import Any

from mom.errors import PolicyError
from mom.evaluator import evaluate
from mom.policy import PolicyStore, concatenate, parameters_policy
from mom.service import PARAMETERS_POLICY

from . import errors
from .verbs import verb


class MomApi:
    """The MOM verbs of the ``Host`` namespace."""

    def __init__(self, store: PolicyStore | None) -> None:
        """:param store: the running MOM's policy store, or ``None`` when MOM is disabled."""
        self._store = store
        self._parameters: dict[str, Any] = {}

    def _policies(self) -> PolicyStore:
        if self._store is None:
            raise errors.MomPolicyError("MOM is disabled in this agent")
        return self._store

    @verb("Host.setMOMPolicy")
    def set_mom_policy(self, policy: str) -> bool:
        """Replace the whole policy set with one policy, as VDSM's ``setPolicy`` does."""
        store = self._policies()
        previous = store.named()
        store.clear()
        if not store.set_policy(None, policy):
            for name, text in sorted(previous.items()):
                store.set_policy(name, text)
            raise errors.MomPolicyError("the policy does not parse; the previous set is kept")
        return True

    @verb("Host.setMOMPolicyParameters")
    def set_mom_policy_parameters(self, key_value_store: dict[str, Any]) -> bool:
        """
        Merge parameters into the ones set before and rewrite the parameters policy with all of
        them, as VDSM does. Unlike VDSM, a name the policies before it do not define is refused
        (VDSM stores it, and then every policy cycle fails).
        """
        store = self._policies()
        merged = {**self._parameters, **key_value_store}
        try:
            text = parameters_policy(merged)
        except ValueError as e:
            raise errors.MomPolicyError(str(e)) from None
        earlier = {n: t for n, t in store.named().items() if n < PARAMETERS_POLICY}
        try:
            evaluate(concatenate({**earlier, PARAMETERS_POLICY: text or "0"}))
        except PolicyError as e:
            raise errors.MomPolicyError(f"parameters refused: {e}") from None
        if not store.set_policy(PARAMETERS_POLICY, text or None):
            raise errors.MomPolicyError("the parameters policy does not parse")
        self._parameters = merged
        return True
