"""The policy store (mom.md 1.5): named texts, sorted concatenation, revert, evaluate, load_dir."""

from __future__ import annotations

import threading

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from mom.entity import Entity
from mom.parser import parse
from mom.policy import DEFAULT_POLICY_NAME, PolicyStore, concatenate, policy_name


@pytest.fixture
def events():
    """:returns: the log events emitted during the test."""
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def test_empty_store_text_is_zero():
    """With no policies the program text is ``"0"``, MOM's stand-in."""
    store = PolicyStore()
    assert store.text() == "0"
    assert store.named() == {}


def test_texts_are_joined_in_name_order_with_newlines():
    """The program is the texts sorted by name joined with newlines."""
    store = PolicyStore()
    assert store.set_policy("b", "(defvar b 2)")
    assert store.set_policy("a", "(defvar a 1)")
    assert store.text() == "(defvar a 1)\n(defvar b 2)"


def test_none_name_is_the_default_name():
    """A None name stores the text as ``50_main_``."""
    store = PolicyStore()
    assert store.set_policy(None, "1")
    assert store.named() == {DEFAULT_POLICY_NAME: "1"}
    assert DEFAULT_POLICY_NAME == "50_main_"


def test_none_text_deletes_the_policy():
    """A None text deletes that policy; deleting a missing one succeeds and changes nothing."""
    store = PolicyStore()
    store.set_policy("a", "1")
    store.set_policy("b", "2")
    assert store.set_policy("a", None)
    assert store.named() == {"b": "2"}
    assert store.set_policy("nope", None)
    assert store.named() == {"b": "2"}


def test_replacing_a_policy():
    """Setting an existing name replaces its text."""
    store = PolicyStore()
    store.set_policy("a", "1")
    store.set_policy("a", "2")
    assert store.named() == {"a": "2"}


def test_parse_error_reverts_and_returns_false(events):
    """A text that breaks the whole program is refused, the old one kept, and a warning logged."""
    store = PolicyStore()
    store.set_policy("a", "(defvar a 1)")
    assert not store.set_policy("a", "(defvar a")
    assert store.named() == {"a": "(defvar a 1)"}
    assert not store.set_policy("new", ")")
    assert store.named() == {"a": "(defvar a 1)"}
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert [str(e["error"]) for e in warnings] == ["parse error", "parse error"]


def test_whole_concatenation_is_checked():
    """A text valid alone is refused when the whole set no longer parses with it."""
    store = PolicyStore()
    assert store.set_policy("a", '(defvar x 1) "')  # the stray quote swallows the rest
    assert store.set_policy("c", "(defvar y 1)")
    # Joined after "a", the quote opens a string up to b's first quote, leaving ")" unmatched.
    assert not store.set_policy("b", '(defvar y ")")')
    assert set(store.named()) == {"a", "c"}


def test_stray_character_in_one_policy_swallows_the_later_ones():
    """As in MOM, a character no rule accepts silently drops every later policy's forms."""
    store = PolicyStore()
    store.set_policy("a", '(Host.Control "a" 1) @')
    store.set_policy("b", '(Host.Control "b" 1)')
    host = Entity()
    assert store.evaluate(host, [])
    assert host.controls == {"a": 1}


def test_comment_only_policy_alone_is_refused():
    """A comment-only policy alone is refused (MOM stores it and fails every cycle)."""
    store = PolicyStore()
    assert not store.set_policy("01-parameters", "# filled in at run time\n")
    assert store.named() == {}
    assert store.set_policy("00-defines", "(defvar True 1)")
    assert store.set_policy("01-parameters", "# filled in at run time\n")


def test_deleting_the_last_policy_leaves_zero():
    """Deleting every policy brings the program back to ``"0"``."""
    store = PolicyStore()
    store.set_policy("a", "1")
    store.set_policy("a", None)
    assert store.text() == "0"
    assert store.evaluate(Entity(), [])


def test_non_string_text_is_a_type_error():
    """A text that is not a string is a programming error, and stores nothing."""
    store = PolicyStore()
    with pytest.raises(TypeError):
        store.set_policy("a", b"1")  # type: ignore[arg-type]
    assert store.named() == {}


def test_clear():
    """``clear`` forgets every policy."""
    store = PolicyStore()
    store.set_policy("a", "1")
    store.clear()
    assert (store.named(), store.text()) == ({}, "0")


def test_named_is_a_copy():
    """Changing the dict ``named`` returns does not change the store."""
    store = PolicyStore()
    store.set_policy("a", "1")
    store.named()["a"] = "("
    assert store.named() == {"a": "1"}


def test_evaluate_sees_host_and_guests_and_sets_controls():
    """``evaluate`` binds ``Host`` and ``Guests``; the controls set are left on the entities."""
    store = PolicyStore()
    store.set_policy(
        None,
        """
        (Host.Control "ksm_run" (> Host.mem_free 10))
        (with Guests g (g.Control "balloon_target" (* g.balloon_cur 2)))
    """,
    )
    host = Entity({}, [{"mem_free": 20}])
    guests = [Entity({"name": n}, [{"balloon_cur": c}]) for n, c in (("a", 1), ("b", 2))]
    assert store.evaluate(host, guests)
    assert host.controls == {"ksm_run": True}
    assert [g.controls for g in guests] == [{"balloon_target": 2}, {"balloon_target": 4}]


def test_evaluate_uses_a_fresh_evaluator_each_time():
    """Each evaluation starts afresh: a defvar'd counter does not carry over."""
    store = PolicyStore()
    store.set_policy(None, '(defvar n 0) (set n (+ n 1)) (Host.Control "n" n)')
    for _ in range(3):
        host = Entity()
        assert store.evaluate(host, [])
    assert host.controls == {"n": 1}


def test_evaluate_failure_logs_and_returns_false(events):
    """A failing policy makes ``evaluate`` return False and logs the PolicyError message."""
    store = PolicyStore()
    store.set_policy(None, "\n(not)")
    assert not store.evaluate(Entity(), [])
    [error] = [e for e in events if e["log_level"] == LogLevel.error]
    assert str(error["error"]) == "arity mismatch in doc parsing of 'c_not' on line 2"


def test_controls_set_before_a_failure_stay_but_evaluate_is_false():
    """Forms before a failing one have run (their controls are set), but the cycle fails."""
    store = PolicyStore()
    store.set_policy(None, '(Host.Control "a" 1) (/ 1 0)')
    host = Entity()
    assert not store.evaluate(host, [])
    assert host.controls == {"a": 1}


def test_evaluate_accepts_any_iterable_of_guests():
    """``Guests`` may be given as any iterable, such as a dict's values."""
    store = PolicyStore()
    store.set_policy(None, '(with Guests g (g.Control "x" 1))')
    guests = {"u": Entity({"uuid": "u"})}
    assert store.evaluate(Entity(), guests.values())
    assert guests["u"].controls == {"x": 1}


def test_load_dir_loads_policy_files_in_name_order(tmp_path):
    """``load_dir`` loads ``*.policy`` files (not dot files) sorted, named without the suffix."""
    (tmp_path / "10-b.policy").write_text("(defvar b 2)")
    (tmp_path / "00-a.policy").write_text("(defvar a 1)")
    (tmp_path / ".hidden.policy").write_text("(")
    (tmp_path / "notes.txt").write_text("(")
    (tmp_path / "dir.policy").mkdir()
    store = PolicyStore()
    assert store.load_dir(tmp_path) == {"00-a": True, "10-b": True}
    assert store.text() == "(defvar a 1)\n(defvar b 2)"


def test_load_dir_skips_a_broken_file_and_goes_on(tmp_path):
    """A file that breaks the set is left out; the files after it still load."""
    (tmp_path / "00-defines.policy").write_text("(defvar True 1)")
    (tmp_path / "01-parameters.policy").write_text("# set at run time\n")
    (tmp_path / "02-broken.policy").write_text("(defvar x")
    (tmp_path / "03-ok.policy").write_text("(defvar y 1)")
    (tmp_path / "04-binary.policy").write_bytes(b"\xff\xfe(")
    store = PolicyStore()
    assert store.load_dir(tmp_path) == {
        "00-defines": True,
        "01-parameters": True,
        "02-broken": False,
        "03-ok": True,
        "04-binary": False,
    }
    assert set(store.named()) == {"00-defines", "01-parameters", "03-ok"}


def test_load_dir_of_missing_directory_raises(tmp_path):
    """A directory that cannot be listed raises OSError."""
    with pytest.raises(OSError):
        PolicyStore().load_dir(tmp_path / "missing")


def test_concatenate_and_policy_name():
    """``concatenate`` is MOM's join; ``policy_name`` strips the directory and ``.policy``."""
    assert concatenate({}) == "0"
    assert concatenate({"b": "2", "a": "1"}) == "1\n2"
    assert policy_name("/etc/vdsm/mom.d/02-balloon.policy") == "02-balloon"
    assert policy_name("rules/balloon.rules") == "balloon.rules"


def test_concurrent_set_and_evaluate_is_consistent():
    """Evaluating while another thread replaces policies always sees a whole, valid program."""
    store = PolicyStore()
    store.set_policy("a", '(Host.Control "v" 0)')
    failures = []
    done = threading.Event()

    def writer():
        for i in range(300):
            store.set_policy("a", f'(Host.Control "v" {i})')
            store.set_policy("b", "(" if i % 2 else "1")
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        if not store.evaluate(Entity(), []):
            failures.append(store.text())
    thread.join()
    assert failures == []
    assert parse(store.text())
