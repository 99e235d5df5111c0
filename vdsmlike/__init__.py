"""vdsmlike host agent: a VDSM-like daemon that serves JSON-RPC 2.0 over WebSocket and drives
libvirt."""

__version__ = "0.1.0"
