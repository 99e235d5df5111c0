"""Pure: which bytes of a VM's serial log one ``VM.getConsoleOutput`` reads, and how they are cut.

The guest writes its serial console to a file that only grows while the VM runs and starts
again from nothing when QEMU recreates it (the VM restarted). A reader keeps a byte offset and
asks for what follows it. The decisions, without I/O:

- :func:`plan`: where to start and how many bytes to read. Without an offset, the last
  ``size`` bytes (a "tail" for a console just opened). An offset beyond the file's size means
  the file was recreated since the reader's last read: read from 0 and say ``reset``.
- :func:`char_end` and :func:`leading_continuations`: cut the bytes at UTF-8 character
  boundaries, so that a multibyte character is never split across two reads (the reader's next
  offset is always the start of a character). Invalid bytes are left to the decoder, which
  replaces them.
- :func:`answer`: the wire result from the bytes read.

Reads take up to :data:`LOOKAHEAD` bytes beyond ``size``: a read smaller than one character
(``size`` below 4) then still returns that whole character instead of nothing, so a reader
always makes progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KiB = 1024
MiB = 1024 * KiB

#: Bytes answered when the caller does not say.
DEFAULT_SIZE = 64 * KiB
#: The most bytes one read answers.
MAX_SIZE = 1 * MiB
#: A UTF-8 character is at most 4 bytes: its lead byte and up to 3 continuation bytes.
LOOKAHEAD = 3


@dataclass(frozen=True)
class Window:
    """
    The bytes to read from a serial log of ``file_size`` bytes.

    :ivar start: the offset of the first byte to read.
    :ivar length: how many bytes to read from ``start`` (``size`` plus the lookahead, within
        the file).
    :ivar size: the most bytes the answer may carry (one character more when ``size`` < 4).
    :ivar file_size: the file's size when planned.
    :ivar reset: the caller's offset was beyond the file: it was recreated.
    :ivar tail: the start was chosen here (no offset given), so it may fall inside a character.
    """

    start: int
    length: int
    size: int
    file_size: int
    reset: bool = False
    tail: bool = False


def plan(file_size: int, offset: int | None, size: int) -> Window:
    """
    Decide what to read.

    :param file_size: the log's current size in bytes (0 when it does not exist yet).
    :param offset: the first byte the caller wants, or None for the last ``size`` bytes.
    :param size: the most bytes wanted (0 answers nothing but where the file ends).
    :raises ValueError: for a negative offset or size.
    """
    if size < 0 or (offset is not None and offset < 0):
        raise ValueError("offset and size must not be negative")
    if offset is None:
        start = max(0, file_size - size)
        return Window(start, file_size - start, size, file_size, tail=True)
    reset = offset > file_size
    start = 0 if reset else offset
    length = min(size + LOOKAHEAD, file_size - start) if size else 0
    return Window(start, length, size, file_size, reset=reset)


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


def _sequence_length(lead: int) -> int:
    """:returns: the bytes of the character a lead byte starts (1 for ASCII and invalid ones)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


def _character_start(chunk: bytes, end: int) -> int | None:
    """:returns: where the character holding byte ``end - 1`` starts (None: no lead found)."""
    start = end - 1
    while start >= 0 and end - start <= LOOKAHEAD and _is_continuation(chunk[start]):
        start -= 1
    if start < 0 or _is_continuation(chunk[start]):
        return None  # continuation bytes without their lead: invalid, left to the decoder
    return start


def char_end(chunk: bytes, limit: int) -> int:
    """
    Where to cut ``chunk`` so that it holds at most ``limit`` bytes and ends on a character
    boundary.

    :param chunk: bytes read from the start of the window (possibly ``limit`` plus lookahead).
    :param limit: the most bytes wanted.
    :returns: the cut, at most ``limit``; when the first character alone is longer than
        ``limit`` and ``chunk`` holds it whole, the end of that character instead (progress).
    """
    end = min(limit, len(chunk))
    if end == 0:
        return 0
    start = _character_start(chunk, end)
    if start is None:
        return end
    length = _sequence_length(chunk[start])
    if start + length <= end:
        return end  # the last character is complete (or an invalid byte: the decoder's)
    if start > 0:
        return start
    return length if length <= len(chunk) else 0


def leading_continuations(chunk: bytes) -> int:
    """
    :returns: how many bytes at the start of ``chunk`` continue a character begun before it
        (at most 3): a tail read skips them so that it starts on a character.
    """
    count = 0
    while count < min(LOOKAHEAD, len(chunk)) and _is_continuation(chunk[count]):
        count += 1
    return count


def answer(window: Window, chunk: bytes) -> dict[str, Any]:
    """
    The ``VM.getConsoleOutput`` result for the bytes read at ``window.start``.

    :param chunk: what the read returned (fewer than ``window.length`` bytes if the file
        shrank meanwhile).
    :returns: ``{"data", "offset", "next", "size", "reset"}``: ``data`` holds the bytes
        [``offset``, ``next``) decoded as UTF-8 (invalid bytes replaced); ``size`` is the
        file's size as last seen.
    """
    skip = leading_continuations(chunk) if window.tail and window.start > 0 else 0
    end = max(skip, char_end(chunk, window.size)) if chunk else 0
    data = chunk[skip:end].decode("utf-8", errors="replace")
    return {
        "data": data,
        "offset": window.start + skip,
        "next": window.start + end,
        "size": max(window.file_size, window.start + len(chunk)),
        "reset": window.reset,
    }
