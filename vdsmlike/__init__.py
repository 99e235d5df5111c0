"""vdsmlike host agent: a VDSM-like daemon serving JSON-RPC 2.0 over WebSocket and driving libvirt."""

__version__ = "0.1.0"
