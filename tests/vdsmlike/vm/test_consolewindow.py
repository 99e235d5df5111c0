"""The pure decisions of ``VM.getConsoleOutput``: the window, the reset rule, the UTF-8 cut."""

from __future__ import annotations

import pytest

from vdsmlike.vm import consolewindow as cw

TEXT = "a é € 😀 z\n".encode()


def read(data: bytes, offset: int | None, size: int) -> dict:
    """Plan and answer a read of ``data`` as if it were the whole file."""
    window = cw.plan(len(data), offset, size)
    return cw.answer(window, data[window.start : window.start + window.length])


def test_offset_within_the_file_reads_from_it():
    """An offset inside the file reads from there, at most size bytes plus the lookahead."""
    window = cw.plan(100, 40, 10)
    assert (window.start, window.length, window.reset, window.tail) == (40, 13, False, False)


def test_offset_at_the_end_reads_nothing():
    """An offset equal to the size is the end: nothing to read, no reset."""
    assert read(b"hello", 5, 10) == {"data": "", "offset": 5, "next": 5, "size": 5, "reset": False}


def test_offset_beyond_the_file_resets_to_zero():
    """An offset past the size means the file was recreated: read from 0 and say reset."""
    answer = read(b"new boot\n", 500, 4)
    assert answer == {"data": "new ", "offset": 0, "next": 4, "size": 9, "reset": True}


def test_no_offset_reads_the_tail():
    """Without an offset, the last size bytes are read."""
    assert read(b"0123456789", None, 4)["data"] == "6789"
    assert read(b"0123456789", None, 64)["offset"] == 0


def test_size_zero_tells_where_the_file_ends():
    """A tail of size 0 answers the end of the file and no data."""
    answer = read(b"0123456789", None, 0)
    assert (answer["data"], answer["offset"], answer["next"]) == ("", 10, 10)


def test_missing_file_reads_as_empty():
    """A log not written yet is an empty file; a stale offset on it resets."""
    assert cw.answer(cw.plan(0, None, 10), b"")["next"] == 0
    assert cw.answer(cw.plan(0, 7, 10), b"")["reset"] is True


def test_negative_values_are_refused():
    """A negative offset or size is a caller's bug."""
    with pytest.raises(ValueError):
        cw.plan(10, -1, 5)
    with pytest.raises(ValueError):
        cw.plan(10, None, -5)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 64])
def test_sequential_reads_never_split_a_character(size):
    """Reading the text in steps of any size returns each character whole, in order."""
    offset, pieces = 0, []
    while offset < len(TEXT):
        answer = read(TEXT, offset, size)
        assert answer["next"] > offset, "every read makes progress"
        assert answer["offset"] == offset
        assert "\ufffd" not in answer["data"]
        pieces.append(answer["data"])
        offset = answer["next"]
    assert "".join(pieces) == TEXT.decode()


def test_cut_backs_off_before_an_incomplete_character():
    """A character whose last bytes are beyond the limit is left for the next read."""
    euro = "€".encode()  # e2 82 ac
    assert cw.char_end(b"ab" + euro, 4) == 2
    assert cw.char_end(b"ab" + euro, 5) == 5


def test_incomplete_character_at_the_end_of_the_file_waits():
    """The guest wrote half a character: the read stops before it; the rest comes later."""
    smile = "😀".encode()
    partial = b"ok " + smile[:2]
    answer = read(partial, 0, 1024)
    assert (answer["data"], answer["next"]) == ("ok ", 3)
    later = read(partial + smile[2:] + b"!", answer["next"], 1024)
    assert later["data"] == "😀!"


def test_a_lone_incomplete_character_is_not_data_yet():
    """Only the first bytes of a character in the file: nothing to answer yet, no progress."""
    answer = read("€".encode()[:2], 0, 10)
    assert (answer["data"], answer["next"]) == ("", 0)


def test_tail_skips_the_rest_of_a_character_begun_before_it():
    """A tail starting inside a character starts at the next one instead."""
    data = "x€y".encode()  # 78 e2 82 ac 79
    answer = read(data, None, 3)  # window starts at the 82
    assert answer == {"data": "y", "offset": 4, "next": 5, "size": 5, "reset": False}


def test_invalid_bytes_are_replaced_not_dropped():
    """Bytes that are not UTF-8 are replaced by U+FFFD and still advance the offset."""
    answer = read(b"a\xff\x80b", 0, 10)
    assert answer["data"] == "a\ufffd\ufffdb" and answer["next"] == 4


def test_stray_continuation_bytes_at_the_cut_are_not_held_back():
    """Continuation bytes with no lead are garbage: the cut does not wait for their lead."""
    assert cw.char_end(b"ab\x80\x80", 4) == 4
    assert cw.char_end(b"\x80\x80\x80\x80\x80", 5) == 5


def test_leading_continuations_counts_at_most_three():
    """Only a character's own continuation bytes (3 at most) are skipped."""
    assert cw.leading_continuations(b"\x82\xacz") == 2
    assert cw.leading_continuations(b"\x80\x80\x80\x80") == 3
    assert cw.leading_continuations(b"abc") == 0


def test_file_that_shrank_while_reading_is_answered_with_what_was_read():
    """Fewer bytes than planned (the file was truncated) answer just those."""
    window = cw.plan(100, 10, 50)
    answer = cw.answer(window, b"abc")
    assert (answer["data"], answer["next"], answer["size"]) == ("abc", 13, 100)
