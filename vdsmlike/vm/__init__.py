"""Virtual machines: the state machine, domain XML, the VM container and VM statistics."""
