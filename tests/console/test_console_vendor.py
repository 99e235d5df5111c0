"""Vendoring xterm.js: integrity and per-file pins, extraction of only the pinned files,
skipping when present, refusing anything else; all offline, on tarballs made here (the real
download is exercised by ``python -m engine.console.vendor`` in contrib/bootstrap.sh)."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from engine.console import vendor
from engine.console.vendor import Pin, VendorError, check_integrity, extract, missing_or_changed

FILES = {
    "package/lib/tool.mjs": b"export const x = 1;\n",
    "package/LICENSE": b"MIT\n",
    "package/README.md": b"not wanted\n",
}


def tarball(files: dict[str, bytes]) -> bytes:
    """A gzipped tarball holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sri(data: bytes) -> str:
    """npm's integrity string of ``data``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def pin_for(data: bytes) -> Pin:
    """A pin of the two wanted files in a tarball ``data``."""
    return Pin(
        name="@scope/tool",
        version="1.2.3",
        integrity=sri(data),
        files={
            "package/lib/tool.mjs": (
                "tool.mjs",
                hashlib.sha256(FILES["package/lib/tool.mjs"]).hexdigest(),
            ),
            "package/LICENSE": ("tool-LICENSE.txt", hashlib.sha256(b"MIT\n").hexdigest()),
        },
    )


def test_integrity_is_checked_like_npm():
    """The registry's sha512 integrity accepts the right bytes and refuses any other."""
    data = tarball(FILES)
    check_integrity(data, sri(data))
    with pytest.raises(VendorError, match="does not match"):
        check_integrity(data + b"x", sri(data))
    with pytest.raises(VendorError, match="no usable digest"):
        check_integrity(data, "md5-abc")


def test_only_the_pinned_files_are_extracted_and_each_is_checked():
    """Extraction yields the pinned files under their vendor names, nothing else, and refuses
    a file that differs from its pin or is missing."""
    data = tarball(FILES)
    assert extract(data, pin_for(data)) == {
        "tool.mjs": FILES["package/lib/tool.mjs"],
        "tool-LICENSE.txt": b"MIT\n",
    }
    changed = tarball({**FILES, "package/LICENSE": b"GPL\n"})
    with pytest.raises(VendorError, match="LICENSE does not match"):
        extract(changed, pin_for(data))
    with pytest.raises(VendorError, match="not in the tarball"):
        extract(tarball({"package/LICENSE": b"MIT\n"}), pin_for(data))
    with pytest.raises(VendorError, match="cannot read"):
        extract(b"not a tarball", pin_for(data))


def test_vendoring_installs_then_skips_then_repairs(tmp_path: Path):
    """The first run downloads and writes the files; the next finds them verified and fetches
    nothing; a changed file is fetched again."""
    data = tarball(FILES)
    pin = pin_for(data)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return data

    assert vendor.vendor(tmp_path, pin, fetch=fetch) == "installed"
    assert fetched == ["https://registry.npmjs.org/@scope/tool/-/tool-1.2.3.tgz"]
    assert (tmp_path / "tool.mjs").read_bytes() == FILES["package/lib/tool.mjs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tool-LICENSE.txt", "tool.mjs"]
    assert vendor.vendor(tmp_path, pin, fetch=fetch) == "present"
    assert len(fetched) == 1
    (tmp_path / "tool.mjs").write_text("tampered")
    assert missing_or_changed(tmp_path, pin) == ["tool.mjs"]
    assert vendor.vendor(tmp_path, pin, fetch=fetch) == "installed"
    assert not missing_or_changed(tmp_path, pin)


def test_a_tarball_that_is_not_the_pinned_one_writes_nothing(tmp_path: Path):
    """A download whose integrity differs is refused before anything is written."""
    data = tarball(FILES)
    pin = pin_for(data)
    with pytest.raises(VendorError):
        vendor.vendor(tmp_path / "out", pin, fetch=lambda url: data + b"\0")
    assert not (tmp_path / "out").exists()


def test_the_command_checks_and_installs_from_a_saved_tarball(tmp_path: Path, capsys):
    """``--check`` fails while the files are missing; ``--tarball`` installs offline from a
    saved file only if it is the pinned one."""
    target = tmp_path / "vendor"
    assert vendor.main(["--check", "--target", str(target)]) == 1
    bogus = tmp_path / "bogus.tgz"
    bogus.write_bytes(tarball(FILES))
    assert vendor.main(["--target", str(target), "--tarball", str(bogus)]) == 1
    assert "does not match" in capsys.readouterr().err
    assert not target.exists()


def test_the_xterm_pin_is_complete():
    """xterm.js is pinned by version, registry integrity and a SHA-256 per extracted file, and
    the page's files are the ES module, its stylesheet and its licence."""
    pin = vendor.XTERM
    assert pin.name == "@xterm/xterm" and pin.version.count(".") == 2
    assert pin.integrity.startswith("sha512-") and len(pin.integrity) == 7 + 88
    assert sorted(name for name, _ in pin.files.values()) == [
        "xterm-LICENSE.txt",
        "xterm.css",
        "xterm.mjs",
    ]
    assert all(len(digest) == 64 for _, digest in pin.files.values())
    assert pin.tarball_url == "https://registry.npmjs.org/@xterm/xterm/-/xterm-6.0.0.tgz"


def test_the_vendored_files_in_the_package_match_their_pins():
    """When the build step has run, the package's vendor dir holds exactly the pinned bytes."""
    if not (vendor.VENDOR_DIR / "xterm.mjs").exists():
        pytest.skip("xterm.js is not vendored here (python -m engine.console.vendor)")
    assert missing_or_changed(vendor.VENDOR_DIR, vendor.XTERM) == []
