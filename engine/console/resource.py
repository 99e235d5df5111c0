"""The web console's static files as a ``twisted.web`` resource: the site's root.

A pure core decides every answer (:func:`reply_for`: path segments, method and
``If-None-Match`` in, a :class:`Reply` out); the shell (:class:`ConsoleResource`) loads the
files once (:func:`load_assets`, at start, before the reactor serves anything) and writes the
replies. What it promises:

- ``/`` is ``index.html``; other paths name files under ``static/`` exactly: no directory
  listings, no dot files, no ``..``, only known file types (anything else is a 404);
- content types by extension, ``.js`` and ``.mjs`` as ``text/javascript`` (browsers refuse ES
  modules served otherwise);
- every answer carries a restrictive Content-Security-Policy: scripts only from the engine's
  origin and never inline, so HTML that slips into the page (a VM named ``<img onerror=...>``)
  cannot run; plus ``X-Content-Type-Options: nosniff``, no referrer, no framing;
- ``Cache-Control: no-cache`` with a strong ``ETag``: the browser revalidates each file
  (a 304 when unchanged). File names carry no content hash (there is no build step), so a
  longer lifetime could mix old and new modules after an upgrade.

The engine mounts the admin API under this resource (``putChild(b"api", ...)``); children put
there win over files of the same name.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource

#: The directory of the console's files in the package.
STATIC_DIR = Path(__file__).resolve().parent / "static"

INDEX = "index.html"

#: What the console serves, by file extension; other files are never served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".woff2": "font/woff2",
}

#: Scripts from this origin only, never inline, never eval. Styles allow 'unsafe-inline'
#: because xterm.js sizes its terminal through <style> elements it creates; a style cannot
#: run code. The API is a WebSocket on the same host (ws: or wss:).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are handled in script; never sent as a page load
        "frame-ancestors 'none'",
    ]
)

#: Headers on every answer, files and errors alike.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_READ_METHODS = (b"GET", b"HEAD")


@dataclass(frozen=True)
class Asset:
    """One file the console serves: its bytes, content type and entity tag."""

    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers (in order) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """:returns: the value of header ``name`` (any case), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def make_asset(name: str, body: bytes) -> Asset | None:
    """:returns: the :class:`Asset` for a file called ``name``, or None for a type we never
    serve."""
    content_type = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
    if content_type is None:
        return None
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def asset_key(segments: Sequence[bytes]) -> str | None:
    """
    The asset a request path names.

    :param segments: the path's segments after the console's mount point, percent-decoded
        (``[b""]`` for ``/``, ``[b"vendor", b"xterm.mjs"]`` for ``/vendor/xterm.mjs``).
    :returns: the asset's key (``"vendor/xterm.mjs"``; :data:`INDEX` for ``/``), or None for
        a path that can name no asset (a directory, a dot file, ``..``, non-ASCII).
    """
    if list(segments) in ([], [b""]):
        return INDEX
    try:
        parts = [segment.decode("ascii") for segment in segments]
    except UnicodeDecodeError:
        return None
    if not all(_SEGMENT.match(part) for part in parts):
        return None
    return "/".join(parts)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _text(status: int, text: str, *extra: tuple[str, str]) -> Reply:
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"))
    return Reply(status, SECURITY_HEADERS + headers + extra, text.encode("utf-8") + b"\n")


def reply_for(
    assets: Mapping[str, Asset],
    segments: Sequence[bytes],
    method: bytes,
    if_none_match: str | None = None,
) -> Reply:
    """
    Pure: the answer to a request for the console's files.

    :param assets: the files by key (:func:`load_assets`).
    :param segments: the request path's segments (see :func:`asset_key`).
    :param method: the HTTP method; only GET and HEAD are allowed (405 otherwise).
    :param if_none_match: the request's ``If-None-Match`` header: 304 when it names the
        file's current entity tag.
    :returns: the :class:`Reply`: 200 with the file, 304, 404 or 405.
    """
    if method not in _READ_METHODS:
        return _text(405, "method not allowed", ("Allow", "GET, HEAD"))
    key = asset_key(segments)
    asset = assets.get(key) if key is not None else None
    if asset is None:
        return _text(404, "not found")
    headers = SECURITY_HEADERS + (("ETag", asset.etag), ("Cache-Control", "no-cache"))
    if _matches(if_none_match, asset.etag):
        return Reply(304, headers, b"")
    return Reply(200, headers + (("Content-Type", asset.content_type),), asset.body)


def load_assets(directory: Path | str) -> dict[str, Asset]:
    """
    Read every servable file under ``directory`` (blocking: call it at start).

    Dot files and directories, symbolic links leaving ``directory`` and files of unknown
    types are left out.

    :returns: the assets by key (``"index.html"``, ``"vendor/xterm.mjs"``); empty when the
        directory does not exist.
    """
    root = Path(directory).resolve()
    assets: dict[str, Asset] = {}
    if not root.is_dir():
        return assets
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root):
            continue
        key = relative.as_posix()
        if asset_key([part.encode("ascii", "replace") for part in relative.parts]) != key:
            continue  # a name no request could reach
        asset = make_asset(key, path.read_bytes())
        if asset is not None:
            assets[key] = asset
    return assets


class _AssetView(Resource):
    """The answer for one request path below the console (a leaf: no further lookup)."""

    isLeaf = True

    def __init__(self, assets: Mapping[str, Asset], segments: Sequence[bytes]) -> None:
        super().__init__()
        self._assets = assets
        self._segments = list(segments)

    def render(self, request: Any) -> bytes:
        reply = reply_for(
            self._assets,
            self._segments,
            request.method,
            _header(request, b"if-none-match"),
        )
        request.setResponseCode(reply.status)
        for name, value in reply.headers:
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        return reply.body  # twisted.web drops it for HEAD and keeps its length


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class ConsoleResource(Resource):
    """
    The site's root: the console's files, with the admin API mounted as a child.

    :param directory: where the files are (the package's ``static/`` by default); read once,
        here.
    :ivar assets: the files served, by key.
    """

    log = Logger()

    def __init__(self, directory: Path | str = STATIC_DIR) -> None:
        super().__init__()
        self.assets = load_assets(directory)
        if INDEX not in self.assets:
            self.log.error(
                "the web console is missing: no {index} in {directory}",
                index=INDEX,
                directory=str(directory),
            )
        elif not any(key.startswith("vendor/") for key in self.assets):
            self.log.warn(
                "xterm.js is not vendored (python -m engine.console.vendor): the "
                "serial console falls back to plain text"
            )

    def getChild(self, path: bytes, request: Any) -> Resource:
        """Any path not mounted as a child names a file (or nothing: 404)."""
        return _AssetView(self.assets, [path, *request.postpath])

    def render(self, request: Any) -> bytes:
        """A request for the root itself (no path at all): the index."""
        return _AssetView(self.assets, []).render(request)
