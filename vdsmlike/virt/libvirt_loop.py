"""Process-wide libvirt state: the default event loop and its thread, and shared embedded drivers.

libvirt delivers domain events only to a process that registered an event loop before opening
its connections, and one loop serves every connection of the process. :func:`ensure_event_loop`
registers libvirt's default implementation once and runs it on one daemon thread; the
callbacks run on that thread (:class:`~vdsmlike.virt.libvirt.LibvirtHypervisor` hops them to
the reactor).

An embedded QEMU driver (``qemu:///embed?root=DIR``) is opened once per process and its
connection shared and never closed (:func:`open_connection`): closing the last connection shuts
the driver down, and each open after that registers the QEMU driver again, until libvirt
refuses with "Too many drivers, cannot register QEMU" after about twenty cycles.
"""

from __future__ import annotations

import threading

import libvirt

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None
# Embedded drivers by URI: opened once per process and never closed (see the module docstring).
_embedded: dict[str, libvirt.virConnect] = {}


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and start its thread, once per process."""
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        _event_loop_thread = threading.Thread(
            target=_run_event_loop, name="libvirt-events", daemon=True
        )
        _event_loop_thread.start()


def _run_event_loop() -> None:
    """Run libvirt's event loop forever (daemon thread)."""
    while True:
        libvirt.virEventRunDefaultImpl()


def open_connection(uri: str) -> libvirt.virConnect:
    """
    Open ``uri`` (blocks); an embedded driver's connection is opened once and shared.

    :raises libvirt.libvirtError: when libvirt refuses.
    """
    if not uri.startswith("qemu:///embed"):
        return libvirt.open(uri)
    with _event_loop_lock:
        if uri not in _embedded:
            _embedded[uri] = libvirt.open(uri)
        return _embedded[uri]


def is_shared(uri: str) -> bool:
    """:returns: whether ``uri``'s connection is the process's shared one (never to be closed)."""
    return uri in _embedded
