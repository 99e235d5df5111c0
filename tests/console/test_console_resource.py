"""The console's static files and the resource serving them: the pure reply decision, the
file loader, the mounting in the admin API's resources, and checks on the files themselves
(no markup from data, no inline script, every import resolvable)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.api import site
from engine.config import ConfigError, check, read_ini
from engine.console.resource import (
    CONTENT_SECURITY_POLICY,
    INDEX,
    STATIC_DIR,
    ConsoleResource,
    asset_key,
    load_assets,
    make_asset,
    reply_for,
)

ASSETS = {
    INDEX: make_asset(INDEX, b"<!doctype html>"),
    "app.js": make_asset("app.js", b"export {};"),
    "vendor/xterm.mjs": make_asset("vendor/xterm.mjs", b"export class Terminal {}"),
}


def test_paths_name_assets_or_nothing():
    """``/`` is the index; plain names map to keys; dot files, ``..``, empty segments
    (directories) and non-ASCII names name nothing."""
    assert asset_key([b""]) == INDEX
    assert asset_key([]) == INDEX
    assert asset_key([b"vendor", b"xterm.mjs"]) == "vendor/xterm.mjs"
    for bad in (
        [b".."],
        [b"vendor", b""],
        [b".git", b"config"],
        [b"a/b"],
        [b"\xc3\xa9.js"],
        [b"vendor", b".."],
        [b"-x.js"],
    ):
        assert asset_key(bad) is None, bad


def test_a_file_is_served_with_its_type_and_the_security_headers():
    """A GET answers 200 with the content type, the CSP, nosniff and a no-cache ETag."""
    reply = reply_for(ASSETS, [b"vendor", b"xterm.mjs"], b"GET")
    assert reply.status == 200
    assert reply.body == b"export class Terminal {}"
    assert reply.header("content-type") == "text/javascript; charset=utf-8"
    assert reply.header("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("Cache-Control") == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', reply.header("ETag"))


def test_the_policy_allows_no_inline_or_foreign_script():
    """Scripts come from the engine's origin only (no inline, no eval), the API over ws: or
    wss:, and nothing may frame the console or receive its forms."""
    directives = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert directives["connect-src"] == "'self' ws: wss:"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'none'"


def test_revalidation_answers_304_without_a_body():
    """An If-None-Match naming the current ETag (alone or in a list, weak or not) gets 304."""
    etag = ASSETS["app.js"].etag
    for header in (etag, f'"other", W/{etag}', "*"):
        reply = reply_for(ASSETS, [b"app.js"], b"GET", header)
        assert (reply.status, reply.body) == (304, b""), header
    assert reply_for(ASSETS, [b"app.js"], b"GET", '"stale"').status == 200


def test_missing_files_and_other_methods_are_refused():
    """Unknown files and directories are 404 (no listing); POST and others are 405 with Allow;
    errors carry the security headers too."""
    for segments in ([b"nothing.js"], [b"vendor", b""], [b"vendor"], [b"..", b"setup.cfg"]):
        reply = reply_for(ASSETS, segments, b"GET")
        assert reply.status == 404, segments
        assert reply.header("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    reply = reply_for(ASSETS, [b""], b"POST")
    assert (reply.status, reply.header("Allow")) == (405, "GET, HEAD")
    assert reply_for(ASSETS, [b""], b"HEAD").status == 200


def test_the_loader_takes_only_servable_files(tmp_path: Path):
    """Dot files, unknown types and links out of the directory are not loaded."""
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "app.js").write_text("export {};")
    (tmp_path / ".hidden.js").write_text("x")
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "xterm.css").write_text("a{}")
    outside = tmp_path.parent / f"{tmp_path.name}-secret.js"
    outside.write_text("secret")
    (tmp_path / "leak.js").symlink_to(outside)
    try:
        assert sorted(load_assets(tmp_path)) == ["app.js", "index.html", "vendor/xterm.css"]
    finally:
        outside.unlink()
    assert load_assets(tmp_path / "missing") == {}


def test_the_package_holds_the_console():
    """The packaged static directory has the page, its modules and styles, all servable."""
    assets = load_assets(STATIC_DIR)
    for name in ("index.html", "app.js", "api.js", "store.js", "console.css", "serial.js"):
        assert name in assets, name
    assert assets["index.html"].content_type == "text/html; charset=utf-8"


def test_the_console_is_the_sites_root_next_to_the_api():
    """``make_resources`` mounts the console under ``""`` and the API under ``api``; the
    session lifetime comes from the engine's configuration."""
    assert site.CONSOLE_SEGMENT == ""
    assert isinstance(ConsoleResource(STATIC_DIR), ConsoleResource)
    config = check(read_ini("[api]\nsession_ttl = 90\n"))
    assert config.session_ttl == 90.0
    assert site.settings_from(config).auth.session_ttl == 90.0
    assert site.settings_from(None).auth.session_ttl == 8 * 3600.0
    with pytest.raises(ConfigError, match="session_ttl"):
        check(read_ini("[api]\nsession_ttl = 0\n"))


# -- the files themselves ---------------------------------------------------------------------

SCRIPTS = sorted(STATIC_DIR.glob("*.js"))
MARKUP_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|"
    r"new Function\(|createContextualFragment"
)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_turn_data_into_markup(path: Path):
    """No console script uses an HTML sink (innerHTML and friends) or eval: text from the
    engine can only ever become text nodes."""
    code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    code = re.sub(r"^\s*//.*$", "", code, flags=re.M)  # comments may name the sinks
    assert not MARKUP_SINKS.findall(code)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_say_their_role_and_import_only_existing_files(path: Path):
    """Each module starts with a comment saying what it is for, and imports only files that
    exist next to it (or vendored ones, dynamically)."""
    text = path.read_text()
    assert text.startswith("// "), path.name
    for target in re.findall(r'from "(\./[^"]+)"', text):
        assert (STATIC_DIR / target).is_file(), f"{path.name} imports missing {target}"


def test_index_has_no_inline_script_style_or_handlers():
    """The page loads one module from a file; no inline scripts, event handler attributes or
    style attributes (the CSP would block them)."""
    html = (STATIC_DIR / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="app.js">']
    assert re.search(r"<script[^>]*>\s*[^<\s]", html) is None
    assert re.search(r"\son[a-z]+\s*=", html) is None
    assert re.search(r"\sstyle\s*=", html) is None


def test_every_form_field_has_a_label():
    """Inputs in the page have a label naming them (by for=id)."""
    html = (STATIC_DIR / "index.html").read_text()
    ids = re.findall(r"<input[^>]*\bid=\"([^\"]+)\"", html)
    assert ids
    for field_id in ids:
        assert f'for="{field_id}"' in html, field_id
