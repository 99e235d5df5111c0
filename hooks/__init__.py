"""Hook runner: VDSM-protocol hook scripts and in-process stevedore plugins (issue 3)."""
