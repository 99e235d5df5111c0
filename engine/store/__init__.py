"""The engine's store: inventory, audit log, jobs and accounts in PostgreSQL (txpostgres).

- ``cluster``: a private PostgreSQL cluster in the state dir, and the service running it.
- ``migrations`` (+ ``migrations/NNNN_name.sql``): schema versions applied at start.
- ``pool``: a txpostgres connection pool that survives PostgreSQL restarts.
- ``postgres``: ``PostgresStore``, the :class:`engine.interfaces.IStore` implementation;
  ``service``: the service that opens it with the engine.
- ``transaction`` and the query groups ``hosts``, ``vms``, ``events``, ``jobs``, ``accounts``.
- Pure data: ``rows`` (entities split static/dynamic/statistics), ``auditlog`` (typed events),
  ``passwords`` (scrypt hashes, session tokens); ``errors``: every typed failure.
"""
