"""Tests for hooks.hooking, the module hook scripts import (VDSM's API)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from xml.dom import minidom

import pytest

from hooks import hooking
from hooks.scripts import PYTHONPATH_DIR

DOMAIN = "<domain type='kvm'><name>vm1</name><description>caf\u00e9</description></domain>"


@pytest.fixture
def domxml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A payload file named by ``$_hook_domxml``."""
    path = tmp_path / "dom.xml"
    path.write_bytes(DOMAIN.encode("utf-8"))
    monkeypatch.setenv("_hook_domxml", str(path))
    return path


def test_domxml_round_trip(domxml: Path) -> None:
    """read_domxml gives a minidom Document; write_domxml stores its UTF-8 XML."""
    dom = hooking.read_domxml()
    assert isinstance(dom, minidom.Document)
    dom.getElementsByTagName("name")[0].firstChild.nodeValue = "vm2"
    hooking.write_domxml(dom)
    text = domxml.read_bytes().decode("utf-8")
    assert "<name>vm2</name>" in text and "caf\u00e9" in text
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')


def test_json_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_json and write_json go through the file named by ``$_hook_json``."""
    path = tmp_path / "p.json"
    path.write_text('{"a": [1, 2]}')
    monkeypatch.setenv("_hook_json", str(path))
    data = hooking.read_json()
    data["b"] = "\u00e9"
    hooking.write_json(data)
    assert hooking.read_json() == {"a": [1, 2], "b": "\u00e9"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (None, False),
        ("true", True),
        ("TRUE", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("2", True),
        (1, True),
        (0, False),
        ("yes", False),
        ("", False),
        ([], False),
    ],
)
def test_tobool(value: object, expected: bool) -> None:
    """tobool follows VDSM: true/false strings, integers, and False for anything else."""
    assert hooking.tobool(value) is expected


def test_exec_cmd_lines_and_raw() -> None:
    """execCmd returns (rc, out, err) with lists of byte lines, or raw bytes with raw=True."""
    argv = [sys.executable, "-c", "import sys; print('a\\nb'); sys.stderr.write('e'); sys.exit(3)"]
    assert hooking.execCmd(argv) == (3, [b"a", b"b"], [b"e"])
    assert hooking.execCmd(argv, raw=True) == (3, b"a\nb\n", b"e")
    cat = hooking.execCmd(["cat"], data="in")
    assert cat == (0, [b"in"], [])


def test_log_and_exit_hook(capsys: pytest.CaptureFixture[str]) -> None:
    """log writes a line to stderr; exit_hook writes its message and exits with 2 by default."""
    hooking.log("hello")
    with pytest.raises(SystemExit) as exited:
        hooking.exit_hook("bye")
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        hooking.exit_hook("warn", return_code=0)
    assert exited.value.code == 0
    assert capsys.readouterr().err == "hello\nbye\nwarn\n"


def test_launch_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Launch flags default to 0 and round-trip through the runtime dir's launchflags file."""
    monkeypatch.setenv("VDSMLIKE_RUNTIME_DIR", str(tmp_path))
    assert hooking.load_vm_launch_flags_from_file("vm-a") == 0
    hooking.dump_vm_launch_flags_to_file("vm-a", 1)
    assert (tmp_path / "vm-a" / "launchflags").read_text().strip() == "1"
    assert hooking.load_vm_launch_flags_from_file("vm-a") == 1
    with pytest.raises(ValueError):
        hooking.dump_vm_launch_flags_to_file("../x", 1)


def test_shims_import_one_implementation() -> None:
    """With hooks/pythonpath on the path, ``hooking`` and ``vdsm.hook.hooking`` are one module."""
    code = (
        "import hooking\nfrom vdsm.hook import hooking as h2\n"
        "import vdsm.hook.hooking as h3\n"
        "assert hooking is h2 is h3\n"
        "assert sorted(hooking.__all__) == sorted(n for n in hooking.__all__ if callable("
        "getattr(hooking, n)))\n"
        "print(hooking.tobool('true'), hooking.read_domxml.__code__.co_filename)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.append({PYTHONPATH_DIR!r})\n" + code],
        capture_output=True,
        text=True,
        check=True,
    )
    flag, filename = done.stdout.split()
    assert flag == "True"
    assert (
        Path(filename).resolve()
        == Path(importlib.import_module("hooks.hooking").__file__).resolve()
    )
