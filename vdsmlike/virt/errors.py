"""Errors every hypervisor adapter raises, whatever its technology."""

from __future__ import annotations


class HypervisorError(Exception):
    """The hypervisor refused or failed an operation; ``str()`` is its own message."""


class DomainNotFound(HypervisorError):
    """No domain with the given id exists (any more)."""

    def __init__(self, vm_id: str) -> None:
        super().__init__(f"Domain not found: {vm_id}")
        self.vm_id = vm_id


class DomainExists(HypervisorError):
    """A domain with that UUID or name already exists."""
