"""Tests of the JSON-RPC layer: codec, dispatcher, event bus, WebSocket transport."""
