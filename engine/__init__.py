"""The central engine (like ovirt-engine): inventory in PostgreSQL, links to every host's agent,
scheduling, VM actions as jobs, and the admin API. ``docs/architecture.md`` maps its modules."""
