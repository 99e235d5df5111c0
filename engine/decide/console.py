"""Pure: the decisions of a console stream (:mod:`engine.consolerelay`), from where it stands.

A stream reads a VM's serial log on the host the VM runs on, from a byte offset, with the
agent's ``VM.getConsoleOutput``. Three decisions, no I/O and no clock:

- :func:`plan_read`: the stream's next read, given where it stands (:class:`StreamPosition`)
  and the host the VM runs on now: none while it runs nowhere, from 0 with ``reset`` when the
  VM runs on another host than the one its offset counts in, else from the offset;
- :func:`advance`: the agent's answer to a planned read makes the stream's new position and
  the piece its watchers get (:func:`piece`), if there is anything new;
- :func:`catch_up`: how a watcher that joined at another offset than the stream's reaches it
  (:class:`Step`): read on its own up to the stream, wait for a stream behind it, or join.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stands: the host whose log its offset counts in (None: no log yet)."""

    host: UUID | None
    offset: int = 0


#: A stream that has read nothing of the VM's current log.
NOWHERE = StreamPosition(None, 0)


@dataclass(frozen=True)
class ReadPlan:
    """Read ``host``'s log from ``offset``; ``reset``: tell watchers the log started over."""

    host: UUID
    offset: int
    reset: bool = False


def plan_read(position: StreamPosition, host: UUID | None) -> ReadPlan | None:
    """
    Decide a stream's next read.

    :param host: the host the VM runs on now, or None.
    :returns: None while the VM runs nowhere; a read from 0 with reset when the VM runs on
        another host than the stream's offset counts in; else a read from the offset.
    """
    if host is None:
        return None
    if position.host != host:
        return ReadPlan(host, 0, reset=True)
    return ReadPlan(host, position.offset)


def advance(plan: ReadPlan, answer: dict[str, Any]) -> tuple[StreamPosition, dict[str, Any] | None]:
    """
    Take an agent's answer to a planned read.

    :returns: the stream's new position, and the piece to hand to watchers (None when there
        is no new output and nothing to reset).
    """
    reset = plan.reset or bool(answer.get("reset"))
    position = StreamPosition(plan.host, int(answer["next"]))
    if not answer["data"] and not reset:
        return position, None
    return position, piece(answer, reset=reset)


def piece(answer: dict[str, Any], *, reset: bool) -> dict[str, Any]:
    """:returns: the part of an agent's answer watchers get."""
    return {
        "data": answer["data"],
        "offset": int(answer["offset"]),
        "next": int(answer["next"]),
        "reset": reset,
    }


class Step(StrEnum):
    """What a watcher that has not joined its stream does next."""

    JOIN = "join"
    READ = "read"
    WAIT = "wait"


def catch_up(watcher: int, stream: int, chunk: int, *, probed: bool) -> tuple[Step, int]:
    """
    Decide how a watcher at offset ``watcher`` reaches a stream at offset ``stream``.

    :param probed: whether the watcher already read once on its own.
    :returns: ``(JOIN, 0)`` when both stand at the same offset; ``(READ, size)`` for a read of
        its own from ``watcher`` (up to the stream, or one chunk when ahead of it and not yet
        probed: the agent then says whether that offset still exists); ``(WAIT, 0)`` when
        ahead of the stream, for the stream to pass it.
    """
    if watcher == stream:
        return Step.JOIN, 0
    if watcher < stream:
        return Step.READ, min(chunk, stream - watcher)
    return (Step.WAIT, 0) if probed else (Step.READ, chunk)
