"""JSON-RPC verb handlers, the verb registry, the schema, and VDSM error codes."""
