"""The web console end to end in real Chromium: a real engine (a child process with its
PostgreSQL), real agents on libvirt's test driver, the page driven by Playwright.

One engine and three agents serve the whole module: hosts ``host-a`` and ``host-b`` are added
through the API, ``host-c`` through the page. Each test makes its own VMs. Screenshots of the
main views go to ``artifacts/console/``. The engine restart runs last.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from console_harness import (
    AgentFleet,
    EngineProcess,
    RemoteError,
    cleanup,
    log_in,
    scratch_dir,
    shot,
    wait_for,
)
from playwright.sync_api import expect

HOSTILE = '<img src=x onerror="window.__pwned=1">'


class Cluster:
    """The module's engine and agents, and the hosts added through the API."""

    def __init__(self, engine: EngineProcess, agents: AgentFleet, ports: dict[str, int]):
        self.engine = engine
        self.agents = agents
        self.ports = ports
        self.hosts: dict[str, dict] = {}

    def add_host(self, name: str) -> dict:
        """Add agent ``name`` as host ``name`` and wait until it is Up."""
        host = self.engine.call(
            "Hosts.add", {"name": name, "address": "127.0.0.1", "port": self.ports[name]}
        )
        self.hosts[name] = self.engine.wait_host(host["id"], "Up")
        return self.hosts[name]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """An engine with hosts host-a and host-b Up, and agent host-c not yet added."""
    base = scratch_dir("vl-console-")
    engine = EngineProcess(base)
    agents = AgentFleet(base)
    try:
        agents.agents.clear()
        engine.start()
        ports = agents.start("host-a", "host-b", "host-c")
        running = Cluster(engine, agents, ports)
        running.add_host("host-a")
        running.add_host("host-b")
        yield running
    finally:
        engine.stop()
        agents.stop()
        cleanup(base)


@pytest.fixture
def page(cluster, new_page) -> Any:
    """A logged-in console page on the dashboard."""
    opened = new_page()
    log_in(opened, cluster.engine.url, cluster.engine.password)
    return opened


def row(page: Any, table_caption: str, name: str) -> Any:
    """The row of ``name`` in the table captioned ``table_caption``."""
    table = page.get_by_role("table", name=table_caption)
    return table.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


# -- the static files ---------------------------------------------------------------------------


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; :returns: status, headers (lower-case names) and body, errors included."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_engine_serves_the_console_files(cluster):
    """The engine's root is the console's index.html with a script-tight CSP, nosniff and an
    ETag that revalidates to 304; modules are text/javascript; directories, unknown files and
    paths out of the directory are 404s."""
    url = cluster.engine.url
    status, headers, body = fetch(url)
    assert status == 200 and b'<script type="module" src="app.js">' in body
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self' ws: wss:" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    assert fetch(url, **{"If-None-Match": headers["etag"]})[0] == 304
    for name in ("app.js", "api.js", "vendor/xterm.mjs"):
        status, headers, _ = fetch(url + name)
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8"), name
    assert fetch(url + "console.css")[1]["content-type"] == "text/css; charset=utf-8"
    for missing in (
        "vendor/",
        "nothing.js",
        "%2e%2e/resource.py",
        "..%2Fresource.py",
        "__init__.py",
    ):
        status, headers, _ = fetch(url + missing)
        assert status == 404, missing
        assert "content-security-policy" in headers


# -- logging in, the dashboard ------------------------------------------------------------------


def test_login_shows_hosts_and_a_host_added_from_the_page_comes_up_live(cluster, new_page):
    """A wrong password is refused on the form; the right one opens the dashboard listing
    the hosts with their states; a host added through the page's form appears and turns Up
    without a reload."""
    page = new_page()
    page.goto(cluster.engine.url)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shot(page, "login")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-message")).to_have_text("Wrong user name or password.")
    page.get_by_label("Password").fill(cluster.engine.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    for name in ("host-a", "host-b"):
        expect(row(page, "Hosts", name).locator(".state")).to_have_text("Up")
    page.evaluate("window.__sameDocument = true")
    page.get_by_text("Add a host").click()
    form = page.get_by_role("form", name="Add a host")
    form.get_by_label("Name").fill("host-c")
    form.get_by_label("Address").fill("127.0.0.1")
    form.get_by_label("Port").fill(str(cluster.ports["host-c"]))
    form.get_by_role("button", name="Add host").click()
    expect(row(page, "Hosts", "host-c").locator(".state")).to_have_text("Up", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    events = page.get_by_role("table", name="Events, newest first")
    expect(events.get_by_text("Host host-c added").first).to_be_visible()
    shot(page, "dashboard")


def test_session_token_is_in_session_storage_and_a_reload_resumes(cluster, page):
    """The token is kept in sessionStorage, never in a cookie, and a reloaded page resumes
    its session without asking for the password again."""
    token = page.evaluate("sessionStorage.getItem('vdsmlike.console.token')")
    assert token and len(token) >= 16
    assert page.evaluate("document.cookie") == ""
    page.reload()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    expect(page.locator("#user-name")).to_have_text("admin")


def test_starting_a_vm_shows_its_state_change_live(cluster, page):
    """Start from the VM's row: the notice follows the job to its outcome, and the row's
    state turns Up, with its host and an uptime, without a reload."""
    host_a = cluster.hosts["host-a"]
    cluster.engine.add_vm("web-1", pinned_host_id=host_a["id"])
    vm_row = row(page, "Virtual machines", "web-1")
    expect(vm_row.locator(".state")).to_have_text("Down")
    page.evaluate("window.__sameDocument = true")
    vm_row.get_by_role("button", name="Start VM “web-1”").click()
    notice = page.locator(".notice", has_text="Start VM “web-1”")
    expect(notice.locator(".job-state")).to_have_text(
        re.compile(r"succeeded on host-a"), timeout=20_000
    )
    expect(vm_row.locator(".state")).to_have_text("Up")
    expect(vm_row.get_by_role("link", name="host-a")).to_be_visible()
    expect(vm_row.locator("td").nth(5)).to_have_text(re.compile(r"\d+ s"))
    expect(vm_row.get_by_role("button", name="Pause VM “web-1”")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    jobs = page.get_by_role("table", name="Recent actions, newest first")
    expect(jobs.get_by_role("row").filter(has_text="web-1").first).to_contain_text("succeeded")


def test_pause_resume_and_power_off_from_the_vm_view(cluster, page):
    """The VM view's buttons pause, resume and power off a running VM, each outcome shown;
    the state in the facts follows."""
    vm = cluster.engine.add_vm("pausable", pinned_host_id=cluster.hosts["host-a"]["id"])
    job = cluster.engine.call("VMs.start", {"id": vm["id"]})
    cluster.engine.wait_vm(vm["id"], "Up")
    assert job["action"] == "start"
    page.goto(f"{cluster.engine.url}#/vms/{vm['id']}")
    expect(page.get_by_role("heading", name="VM pausable")).to_be_visible()
    state = page.locator(".facts dd").first
    for label, expected in (("Pause", "Paused"), ("Resume", "Up"), ("Power off", "Down")):
        page.get_by_role("button", name=f"{label} VM “pausable”").click()
        expect(state).to_have_text(expected, timeout=20_000)
        expect(
            page.locator(".notice", has_text=f"{label} VM “pausable”").first.locator(".job-state")
        ).to_have_text(re.compile("succeeded"))


def test_host_maintenance_then_activate(cluster, page):
    """Maintenance from the host's view moves host-b to Maintenance (its job's outcome shown),
    and Activate brings it back Up."""
    host = cluster.hosts["host-b"]
    page.get_by_role("link", name="host-b", exact=True).first.click()
    expect(page.get_by_role("heading", name="Host host-b")).to_be_visible()
    state = page.locator(".facts dd").first
    expect(state).to_have_text("Up")
    page.get_by_role("button", name="Maintenance host “host-b”").click()
    expect(state).to_have_text("Maintenance", timeout=20_000)
    notice = page.locator(".notice", has_text="Maintenance host “host-b”")
    expect(notice.locator(".job-state")).to_have_text(re.compile("succeeded"))
    assert cluster.engine.call("Hosts.get", {"id": host["id"]})["status"] == "Maintenance"
    page.get_by_role("button", name="Activate host “host-b”").click()
    expect(state).to_have_text("Up", timeout=20_000)


def test_a_refused_start_shows_each_hosts_explanation(cluster, page):
    """A VM larger than any host cannot start: the notice gives the engine's reason and a
    table with every host, refused by the memory filter with its numbers."""
    cluster.engine.add_vm("huge", memory_mib=1024 * 1024)
    vm_row = row(page, "Virtual machines", "huge")
    vm_row.get_by_role("button", name="Start VM “huge”").click()
    notice = page.locator(".notice-refused", has_text="Start VM “huge”: refused")
    expect(notice).to_be_visible()
    table = notice.get_by_role("table", name="What the scheduler said about each host")
    for name in ("host-a", "host-b"):
        host_row = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name=name))
        expect(host_row).to_contain_text("refused")
        expect(host_row).to_contain_text(re.compile("memory"))
    expect(vm_row.locator(".state")).to_have_text("Down")
    events = page.get_by_role("table", name="Events, newest first")
    refused = events.get_by_role("row").filter(has_text="VM_START_REFUSED").first
    expect(refused).to_contain_text("huge")
    shot(page, "refused-start")


def test_html_in_names_and_messages_is_shown_as_text(cluster, new_page, page):
    """A VM named with HTML, and a failed login as an HTML user name, show as their characters
    in the tables, the event log and the VM's view; nothing is parsed or run."""
    other = new_page()
    other.goto(cluster.engine.url)
    other.get_by_label("User name").fill("<script>window.__pwned=2</script>")
    other.get_by_label("Password").fill("x")
    other.get_by_role("button", name="Log in").click()
    expect(other.locator("#login-message")).to_have_text("Wrong user name or password.")
    vm = cluster.engine.add_vm(HOSTILE)
    expect(row(page, "Virtual machines", HOSTILE).locator(".state")).to_have_text("Down")
    events = page.get_by_role("table", name="Events, newest first")
    expect(events.get_by_text(f"VM {HOSTILE} defined")).to_be_visible()
    expect(events.get_by_text("Failed login as <script>window.__pwned=2</script>")).to_be_visible()
    page.goto(f"{cluster.engine.url}#/vms/{vm['id']}")
    expect(page.get_by_role("heading", name=f"VM {HOSTILE}")).to_be_visible()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    assert page.locator("main script").count() == 0


def test_detail_views_chart_recent_cpu_and_memory(cluster, page):
    """The host's and a running VM's views draw SVG charts of their stored statistics, with
    more points arriving live."""
    host = cluster.hosts["host-a"]
    vm = cluster.engine.add_vm("charted", pinned_host_id=host["id"])
    cluster.engine.call("VMs.start", {"id": vm["id"]})
    cluster.engine.wait_vm(vm["id"], "Up")
    wait_for(
        lambda: cluster.engine.call("Hosts.statistics", {"id": host["id"]}),
        lambda rows: len(rows) >= 3,
        what="three stored host samples",
    )
    page.goto(f"{cluster.engine.url}#/hosts/{host['id']}")
    chart = page.get_by_role("img", name=re.compile(r"^CPU: .* now, \d+ samples?"))
    expect(chart).to_be_visible()
    points = lambda: chart.locator("polyline").get_attribute("points").split()  # noqa: E731
    first = len(points())
    assert first >= 3
    wait_for(lambda: len(points()), lambda n: n > first, what="a live sample in the chart")
    expect(page.get_by_role("img", name=re.compile("^Memory used: .* now"))).to_be_visible()
    table = page.get_by_role("table", name="Virtual machines on this host")
    expect(table.get_by_role("link", name="charted")).to_be_visible()
    shot(page, "host-detail")
    table.get_by_role("link", name="charted").click()
    expect(page.get_by_role("heading", name="VM charted")).to_be_visible()
    vm_chart = page.get_by_role("img", name=re.compile(r"^CPU: "))
    expect(vm_chart).to_have_attribute(
        "aria-label", re.compile(r"now, ([2-9]|\d\d+) samples"), timeout=15_000
    )
    assert len(vm_chart.locator("polyline").get_attribute("points").split()) >= 2
    shot(page, "vm-detail")


def test_event_log_filters_by_severity_and_text(cluster, page):
    """The event log lists the newest first; the severity filter keeps warnings and worse,
    and the text filter narrows by type or message."""
    cluster.engine.add_vm("filter-me")
    events = page.get_by_role("table", name="Events, newest first")
    expect(events.get_by_text("VM filter-me defined")).to_be_visible()
    ids = page.locator("table.events tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.key))"
    )
    assert ids == sorted(ids, reverse=True) and len(ids) > 3
    page.get_by_label("Minimum severity").select_option("warning")
    expect(events.get_by_text("VM filter-me defined")).to_have_count(0)
    severities = page.locator("table.events tbody .badge").all_text_contents()
    assert severities and set(severities) <= {"warning", "error", "alert"}
    page.get_by_label("Minimum severity").select_option("")
    page.get_by_role("searchbox", name="Filter events").fill("filter-me")
    expect(page.locator("table.events tbody tr")).to_have_count(1)


def test_removing_a_vm_asks_once_more_then_it_disappears_live(cluster, page):
    """Remove turns into "Confirm remove" on the first press; the second removes the VM, whose
    row then disappears without a reload."""
    vm = cluster.engine.add_vm("doomed")
    vm_row = row(page, "Virtual machines", "doomed")
    vm_row.get_by_role("button", name="Remove VM “doomed”").click()
    confirm = vm_row.get_by_role("button", name="Confirm: Remove VM “doomed”")
    expect(confirm).to_have_text("Confirm remove")
    assert cluster.engine.call("VMs.get", {"id": vm["id"]})["name"] == "doomed"
    confirm.click()
    expect(vm_row).to_have_count(0)
    with pytest.raises(RemoteError) as gone:
        cluster.engine.call("VMs.get", {"id": vm["id"]})
    assert gone.value.code == 404


def test_a_dropped_websocket_reconnects_and_catches_up(cluster, new_page):
    """When the page's WebSocket drops, a banner says it is reconnecting; a VM defined while
    the page is away appears, with its event, once the page is back, without a reload."""
    page = new_page()
    state = {"blocked": False, "sockets": []}

    def route(ws: Any) -> None:
        if state["blocked"]:
            ws.close(code=4001, reason="blocked by the test")
            return
        ws.connect_to_server()
        state["sockets"].append(ws)

    page.route_web_socket(re.compile(r"/api$"), route)
    log_in(page, cluster.engine.url, cluster.engine.password)
    page.evaluate("window.__sameDocument = true")
    state["blocked"] = True
    state["sockets"][-1].close(code=4000, reason="dropped by the test")
    banner = page.get_by_role("alert").filter(has_text="Connection to the engine lost")
    expect(banner).to_be_visible()
    cluster.engine.add_vm("made-while-away")
    page.wait_for_timeout(600)  # a reconnection attempt or two is refused meanwhile
    expect(banner.get_by_role("button", name="Retry now")).to_be_visible()
    state["blocked"] = False
    expect(banner).to_be_hidden(timeout=20_000)
    expect(row(page, "Virtual machines", "made-while-away").locator(".state")).to_have_text("Down")
    events = page.get_by_role("table", name="Events, newest first")
    expect(events.get_by_text("VM made-while-away defined")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    cluster.engine.add_vm("made-after-return")
    expect(row(page, "Virtual machines", "made-after-return")).to_have_count(1)


def test_bad_requests_get_errors_and_the_engine_keeps_serving(cluster):
    """The API the page uses answers bad input with JSON-RPC errors and goes on serving."""
    with pytest.raises(RemoteError) as refused:
        cluster.engine.call("VMs.add", {"name": "x", "memory_mib": 0})
    assert refused.value.code == -32602
    with pytest.raises(RemoteError) as missing:
        cluster.engine.call("VMs.get", {"id": "00000000-0000-0000-0000-000000000000"})
    assert missing.value.code == 404
    assert json.dumps(cluster.engine.call("Hosts.list"))


def test_the_page_survives_an_engine_restart(cluster, page):
    """The engine stops and starts again: the page shows the banner meanwhile, then
    reconnects by itself, resumes its session and shows the hosts Up again."""
    page.evaluate("window.__sameDocument = true")
    cluster.engine.stop()
    banner = page.get_by_role("alert").filter(has_text="Connection to the engine lost")
    expect(banner).to_be_visible()
    cluster.engine.start()
    expect(banner).to_be_hidden(timeout=30_000)
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    expect(row(page, "Hosts", "host-a").locator(".state")).to_have_text("Up", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    assert page.evaluate("sessionStorage.getItem('vdsmlike.console.token')")
