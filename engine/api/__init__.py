"""The engine's admin API: JSON-RPC 2.0 over WebSocket at ``/api``, described by
``schema/engine.yml``."""
