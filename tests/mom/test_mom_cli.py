"""``vdsmlike-mom-eval``: evaluating policy files against JSON data, and the REPL."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from mom.cli import main

DATA = {
    "host": {
        "properties": {"interval": 15},
        "stats": [
            {"mem_free": 100, "mem_available": 1000},
            {"mem_free": 300, "mem_available": 1000},
        ],
    },
    "guests": [
        {"properties": {"uuid": "u-1", "name": "vm1"}, "stats": {"balloon_cur": 500}},
        {"properties": {"uuid": "u-2", "name": "vm2"}, "stats": [{"balloon_cur": 800}]},
    ],
}

POLICY = """
(defvar free (/ (Host.StatAvg "mem_free") Host.mem_available))
(if (< free 0.5) (Host.Control "ksm_run" 1) 0)
(with Guests guest (guest.Control "balloon_target" (* guest.balloon_cur 0.9)))
"""


@pytest.fixture
def files(tmp_path):
    """:returns: a function writing a file under tmp_path and returning its path as a string."""

    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """:returns: the exit status, stdout and stderr of ``main(argv)``."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_prints_controls_as_json(capsys, files):
    """The policy runs against the data and each entity's controls are printed as JSON."""
    data = files("data.json", json.dumps(DATA))
    status, out, err = run(capsys, files("50-main.policy", POLICY), "--data", data)
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "host": {"ksm_run": 1},
        "guests": [
            {"uuid": "u-1", "name": "vm1", "controls": {"balloon_target": 450.0}},
            {"uuid": "u-2", "name": "vm2", "controls": {"balloon_target": 720.0}},
        ],
    }


def test_files_run_in_policy_name_order(capsys, files):
    """Files are concatenated in the store's name order, whatever the command-line order."""
    second = files("02-use.policy", '(Host.Control "x" limit)')
    first = files("01-define.policy", "(defvar limit 7)")
    status, out, _ = run(capsys, second, first)
    assert status == 0
    assert json.loads(out) == {"host": {"x": 7}, "guests": []}


def test_policy_error_prints_the_message_and_exits_1(capsys, files):
    """A policy error prints the PolicyError message on stderr and exits with status 1."""
    status, out, err = run(capsys, files("p.policy", "(defvar a 1)\n\n(+ a f56)"))
    assert (status, out, err) == (1, "", "undefined symbol f56 on line 3\n")


def test_parse_error_exits_1(capsys, files):
    """A parse error exits 1 with ``parse error``."""
    status, _, err = run(capsys, files("p.policy", "(defvar a"))
    assert (status, err) == (1, "parse error\n")


def test_data_errors_exit_1(capsys, files):
    """Data of the wrong shape, bad JSON or a missing file exit 1 with a message."""
    policy = files("p.policy", "1")
    for text in ("[1]", '{"guests": {}}', '{"host": {"stats": [1]}}', "{", '{"host": 1}'):
        status, _, err = run(capsys, policy, "--data", files("d.json", text))
        assert status == 1 and err.startswith("vdsmlike-mom-eval: "), (text, err)
    status, _, err = run(capsys, policy, "--data", "/nonexistent/d.json")
    assert status == 1 and "No such file" in err


def test_duplicate_policy_names_exit_1(capsys, tmp_path):
    """Two files with the same policy name are refused."""
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.policy").write_text("1")
    status, _, err = run(capsys, str(tmp_path / "x/a.policy"), str(tmp_path / "y/a.policy"))
    assert status == 1 and "two policy files are named 'a'" in err


def test_declared_fields_from_data(capsys, files):
    """A ``fields`` list declares statistics, so a missing optional field reads as None."""
    data = {"host": {"stats": {"a": 1}, "fields": ["a", "b"]}, "guests": []}
    text = '(Host.Control "b" (valid Host.b)) (Host.Control "s" (Host.Stat "b" 5))'
    status, out, _ = run(capsys, files("p.policy", text), "--data", files("d", json.dumps(data)))
    assert status == 0
    assert json.loads(out)["host"] == {"b": False, "s": 5}


def test_data_from_stdin(capsys, files, monkeypatch):
    """``--data -`` reads the data from standard input."""
    status, out, _ = run(
        capsys,
        files("p.policy", '(Host.Control "f" Host.mem_free)'),
        "--data",
        "-",
        stdin=json.dumps(DATA),
        monkeypatch=monkeypatch,
    )
    assert status == 0 and json.loads(out)["host"] == {"f": 300}


def test_no_policy_and_no_repl_is_a_usage_error(capsys):
    """Without policy files or ``--repl`` the command refuses with a usage error."""
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_repl_prints_each_result(capsys, monkeypatch):
    """The REPL evaluates the forms it reads and prints each result, keeping definitions."""
    forms = "(defvar x 2)\n(def sq (v)\n  (* v v))\n(sq x) (+ x 1)\n\n# comment\n(/ 11 2)\n"
    status, out, err = run(capsys, "--repl", stdin=forms, monkeypatch=monkeypatch)
    assert (status, err) == (0, "")
    assert out.splitlines() == ["2", "sq", "4", "3", "5.5"]


def test_repl_reports_errors_and_goes_on(capsys, monkeypatch):
    """A failing form prints its message on stderr; the REPL continues and exits 1 at the end."""
    status, out, err = run(capsys, "--repl", stdin="(not)\n)\n(+ 1 1)\n(", monkeypatch=monkeypatch)
    assert status == 1
    assert out.splitlines() == ["2"]
    assert err.splitlines() == [
        "arity mismatch in doc parsing of 'c_not' on line 1",
        "parse error",
        "parse error",
    ]


def test_repl_with_policy_files_and_data(capsys, files, monkeypatch):
    """With files and data, the REPL starts after the files ran, with Host and Guests bound."""
    data = files("d.json", json.dumps(DATA))
    status, out, _ = run(
        capsys,
        files("p.policy", "(defvar limit 3)"),
        "--data",
        data,
        "--repl",
        stdin='limit\nHost.mem_free\n(with Guests g (g.Prop "name"))\n"text"\nnil\n',
        monkeypatch=monkeypatch,
    )
    assert status == 0
    assert out.splitlines() == ["3", "300", "['vm1', 'vm2']", "text", "None"]


def test_console_script_module_runs():
    """``python -m mom.cli`` runs the same entry point as the console script."""
    done = subprocess.run(
        [sys.executable, "-m", "mom.cli", "--repl"],
        input="(+ 40 2)\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "42\n")
