"""MOM's collectors: what the policy thread knows about the host and each guest.

``host.py`` reads the host's own figures (``/proc``, KSM's sysfs); ``guest.py`` turns the agent's
VM statistics into MOM's guest fields. Field names and units are MOM's (KiB for memory).
"""
