"""A minimal ``vdsm`` package so that VDSM hook scripts can ``from vdsm.hook import hooking``."""
