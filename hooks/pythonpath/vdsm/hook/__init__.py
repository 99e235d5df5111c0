"""``vdsm.hook`` for hook scripts: holds only :mod:`vdsm.hook.hooking`."""
