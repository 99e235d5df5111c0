"""JSON-RPC 2.0 codec and dispatcher, the WebSocket transport, and the event bus."""
