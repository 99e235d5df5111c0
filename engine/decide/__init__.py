"""Pure decision cores of the engine: a cluster snapshot in, a decision (with its reasons) out.

Nothing here does I/O, touches the reactor or reads the clock; the shell passes snapshots and
the current (virtual) time in, and turns the decisions into RPC calls, rows and events.
"""
