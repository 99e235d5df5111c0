"""Build step: vendor xterm.js from the npm registry into the console's ``static/vendor/``.

Run it at install time (``contrib/bootstrap.sh`` does)::

    python -m engine.console.vendor            # download, verify, extract (skips when done)
    python -m engine.console.vendor --check    # verify only; exit 1 when missing or changed
    python -m engine.console.vendor --tarball xterm-6.0.0.tgz   # offline, from a saved file

The tarball is pinned by version and by the registry's ``dist.integrity`` (a SHA-512 of the
tarball, as ``npm`` checks it), and each extracted file by its SHA-256, so a present file is
verified without the network and nothing unpinned ever reaches the page. Only the files the
page needs are extracted: the ES module build, its stylesheet and its licence. No ``npm`` is
needed: the registry serves plain HTTPS (``urllib``). The directory is build output (ignored
by git, shipped as package data), so the console works offline once installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pin:
    """
    One npm package version, pinned.

    :ivar name: the package's name (``@xterm/xterm``).
    :ivar version: the exact version.
    :ivar integrity: the registry's ``dist.integrity`` for the tarball (``sha512-<base64>``).
    :ivar files: member of the tarball -> (file name in the vendor dir, its SHA-256 in hex).
    """

    name: str
    version: str
    integrity: str
    files: Mapping[str, tuple[str, str]]

    @property
    def tarball_url(self) -> str:
        """The tarball's address on the registry (the registry's own naming scheme)."""
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"


REGISTRY = "https://registry.npmjs.org"

#: xterm.js 6.0.0, the current stable release (MIT); its ES module build is what the page
#: imports (``import {Terminal} from "./vendor/xterm.mjs"``).
XTERM = Pin(
    name="@xterm/xterm",
    version="6.0.0",
    integrity="sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==",
    files={
        "package/lib/xterm.mjs": (
            "xterm.mjs",
            "b336ec65a086c056d4804b3d4c2347da5663d3f23c3f25be866467bd8857ad59",
        ),
        "package/css/xterm.css": (
            "xterm.css",
            "854a7c0fb70e8b1a083c16797ab827299fb18744f5ad34f227b48337e33293c6",
        ),
        "package/LICENSE": (
            "xterm-LICENSE.txt",
            "b569f629d00f2626a8100df2a1798210535621e42164dfd426a6fe5aac7b0ccd",
        ),
    },
)

#: Where the console's vendored files go.
VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"

MAX_TARBALL = 32 * 1024 * 1024


class VendorError(Exception):
    """The tarball could not be fetched, or is not the pinned one."""


def check_integrity(data: bytes, integrity: str) -> None:
    """
    Pure: check bytes against a Subresource-Integrity string as npm writes them.

    :param integrity: ``sha512-<base64>`` (several, space-separated, are accepted: any match).
    :raises VendorError: when no digest matches, or none is SHA-512/384/256.
    """
    known = {"sha512": hashlib.sha512, "sha384": hashlib.sha384, "sha256": hashlib.sha256}
    tried = False
    for item in integrity.split():
        algorithm, _, expected = item.partition("-")
        if algorithm not in known:
            continue
        tried = True
        if base64.b64encode(known[algorithm](data).digest()).decode("ascii") == expected:
            return
    if not tried:
        raise VendorError(f"no usable digest in integrity {integrity!r}")
    raise VendorError("the tarball does not match its pinned integrity")


def extract(tarball: bytes, pin: Pin) -> dict[str, bytes]:
    """
    Pure: the pinned files out of a package tarball, each checked against its SHA-256.

    :returns: vendor file name -> bytes.
    :raises VendorError: a file is missing, is not a regular file, or differs from its pin.
    """
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for member_name, (target, digest) in pin.files.items():
                try:
                    member = archive.getmember(member_name)
                except KeyError:
                    raise VendorError(f"{member_name} is not in the tarball") from None
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise VendorError(f"{member_name} is not a regular file")
                data = handle.read()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise VendorError(f"{member_name} does not match its pinned SHA-256")
                out[target] = data
    except (tarfile.TarError, OSError, EOFError) as e:
        raise VendorError(f"cannot read the tarball: {e}") from None
    return out


def missing_or_changed(directory: Path, pin: Pin) -> list[str]:
    """:returns: the vendor files that are absent from ``directory`` or differ from their pins
    (empty when everything is in place)."""
    wrong = []
    for target, digest in pin.files.values():
        try:
            data = (directory / target).read_bytes()
        except OSError:
            wrong.append(target)
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            wrong.append(target)
    return wrong


def download(url: str, *, timeout: float = 60.0) -> bytes:
    """
    Fetch ``url`` (HTTPS) with urllib.

    :raises VendorError: on any network or HTTP failure, or a body over 32 MiB.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "vdsmlike-vendor"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = response.read(MAX_TARBALL + 1)
    except OSError as e:
        raise VendorError(f"cannot download {url}: {e}") from None
    if len(data) > MAX_TARBALL:
        raise VendorError(f"{url} is larger than {MAX_TARBALL} bytes")
    return data


def write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write each file atomically (a temporary file renamed into place), mode 0644."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".vendor-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, directory / name)
        except BaseException:
            os.unlink(temporary)
            raise


def vendor(
    directory: Path = VENDOR_DIR,
    pin: Pin = XTERM,
    *,
    fetch: Callable[[str], bytes] = download,
    force: bool = False,
) -> str:
    """
    Make ``directory`` hold the pinned files: verify what is there, else fetch and extract.

    :param fetch: url -> tarball bytes (:func:`download`; a reader of a saved file offline).
    :param force: fetch even when the files are in place.
    :returns: ``"present"`` (nothing done) or ``"installed"``.
    :raises VendorError: the tarball cannot be had or is not the pinned one; nothing was
        written then.
    """
    if not force and not missing_or_changed(directory, pin):
        return "present"
    tarball = fetch(pin.tarball_url)
    check_integrity(tarball, pin.integrity)
    write_files(directory, extract(tarball, pin))
    return "installed"


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring). :returns: the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.console.vendor", description="Vendor xterm.js into the web console."
    )
    parser.add_argument("--target", type=Path, default=VENDOR_DIR, help="vendor directory")
    parser.add_argument("--force", action="store_true", help="fetch even if present")
    parser.add_argument("--check", action="store_true", help="verify only, fetch nothing")
    parser.add_argument("--tarball", type=Path, help="use this saved tarball, not the network")
    args = parser.parse_args(argv)
    label = f"{XTERM.name} {XTERM.version}"
    if args.check:
        wrong = missing_or_changed(args.target, XTERM)
        if wrong:
            print(
                f"{label}: missing or changed in {args.target}: {', '.join(wrong)}", file=sys.stderr
            )
            return 1
        print(f"{label}: present and verified in {args.target}")
        return 0
    fetch: Callable[[str], bytes] = download
    if args.tarball is not None:
        saved: Path = args.tarball
        fetch = lambda _url: saved.read_bytes()  # noqa: E731
    try:
        outcome = vendor(args.target, XTERM, fetch=fetch, force=args.force)
    except (VendorError, OSError) as e:
        print(f"{label}: {e}", file=sys.stderr)
        return 1
    print(f"{label}: {outcome} in {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
