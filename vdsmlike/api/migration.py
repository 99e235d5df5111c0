"""Live migration verbs: ``VM.migrate``, ``VM.migrateCancel``, ``VM.getMigrationStatus``,
``VM.migrateChangeParams`` on the source; ``VM.migrationCreate`` and ``VM.migrationFinish`` on
the destination, called by the source agent. Thin: params to :class:`MigrationJobs`."""

from __future__ import annotations

from typing import Any

from ..config import AgentConfig, migration_settings
from ..interfaces import IHookRunner
from ..vm.container import VmContainer
from ..vm.migration_jobs import MigrationJobs
from ..vm.migration_peer import WebSocketAgentConnector
from .verbs import verb


class MigrationApi:
    """The migration verbs of the ``VM`` namespace. Params arrive checked against the schema."""

    def __init__(self, jobs: MigrationJobs | None) -> None:
        self._jobs = jobs

    @classmethod
    def for_agent(
        cls,
        config: AgentConfig,
        reactor: Any,
        *,
        container: VmContainer,
        hypervisor: Any,
        hooks: IHookRunner,
        publish: Any,
    ) -> MigrationApi:
        """The verbs over this agent's migrations, linked to peers over WebSocket."""
        jobs = MigrationJobs(
            container,
            hypervisor,
            hooks,
            connector=WebSocketAgentConnector(reactor),
            clock=reactor,
            publish=publish,
            settings=migration_settings(config),
            serial_dir=config.serial_dir,
            token=config.token,
        )
        return cls(jobs)

    @property
    def jobs(self) -> MigrationJobs:
        """The migrations behind the verbs."""
        assert self._jobs is not None, "MigrationApi built without jobs (schema checks only)"
        return self._jobs

    @verb("VM.migrate")
    async def migrate(self, vmID: str, params: dict[str, Any]) -> bool:
        """Start a live migration to ``params.dst``; progress follows as events."""
        return await self.jobs.migrate(vmID, params)

    @verb("VM.migrateCancel")
    def migrate_cancel(self, vmID: str) -> bool:
        """Cancel the VM's outgoing migration."""
        return self.jobs.cancel(vmID)

    @verb("VM.getMigrationStatus")
    def get_migration_status(self, vmID: str) -> dict[str, Any]:
        """Report the VM's current or last outgoing migration."""
        return self.jobs.status(vmID)

    @verb("VM.migrateChangeParams")
    async def migrate_change_params(self, vmID: str, params: dict[str, Any]) -> bool:
        """Change the running migration's bandwidth."""
        return await self.jobs.change_params(vmID, params)

    @verb("VM.migrationCreate")
    async def migration_create(
        self, vmID: str, params: dict[str, Any], incomingLimit: int = 0
    ) -> dict[str, Any]:
        """Prepare to receive the VM (called by the source agent)."""
        return await self.jobs.create_incoming(vmID, params, incomingLimit)

    @verb("VM.migrationFinish")
    async def migration_finish(self, vmID: str) -> bool:
        """The source's half is done: the VM must run here now (called by the source agent)."""
        return await self.jobs.finish_incoming(vmID)
