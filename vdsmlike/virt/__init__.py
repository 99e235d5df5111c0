"""Hypervisor adapters: libvirt (real) and in-memory, and the per-VM blocking runner."""
