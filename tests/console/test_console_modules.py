"""The console's pure JavaScript (store, formatting, charts, event filters, action outcomes,
DOM building, backoff) tested in real Chromium, module by module.

The page's files are served to the browser by Playwright's request routing from
``engine/console/static`` at ``http://console.test/``: no engine, no server.
"""

from __future__ import annotations

import mimetypes
from typing import Any

import pytest

from engine.console.resource import STATIC_DIR

ORIGIN = "http://console.test"


@pytest.fixture
def js(new_page) -> Any:
    """Runs an async function body in a blank page of the console's origin; the modules are
    imported as ``m.<file stem>`` (``m.store.parseNotification``)."""
    page = new_page()

    def serve(route: Any) -> None:
        name = route.request.url.removeprefix(ORIGIN + "/").split("?")[0] or "blank.html"
        if name == "blank.html":
            return route.fulfill(
                body="<!doctype html><title>t</title><body></body>", content_type="text/html"
            )
        path = (STATIC_DIR / name).resolve()
        if not path.is_relative_to(STATIC_DIR) or not path.is_file():
            return route.fulfill(status=404, body="")
        kind = (
            "text/javascript"
            if path.suffix in (".js", ".mjs")
            else (mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        )
        return route.fulfill(body=path.read_bytes(), content_type=kind)

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/blank.html")
    modules = ["actions", "api", "charts", "dom", "eventlog", "format", "serial", "store"]

    def run(body: str) -> Any:
        loader = ", ".join(f"{name}: await import('/{name}.js')" for name in modules)
        return page.evaluate(f"async () => {{ const m = {{ {loader} }}; {body} }}")

    return run


def test_notifications_are_parsed_by_kind_and_id(js):
    """``|engine|<kind>|<id>`` names its kind and id; other methods are not the store's."""
    assert js("""return [m.store.parseNotification('|engine|vm|abc'),
                         m.store.parseNotification('|engine|removed|x-1'),
                         m.store.parseNotification('|virt|VM_status|x')]""") == [
        {"kind": "vm", "id": "abc"},
        {"kind": "removed", "id": "x-1"},
        None,
    ]


def test_events_merge_newest_first_without_duplicates_and_capped(js):
    """Merging events keeps one of each id, highest id first, at most the cap."""
    assert js("""const e = (id) => ({id: String(id)});
        return m.store.mergeEvents([e(3), e(1)], [e(2), e(3), e(10)], 3).map((x) => x.id)""") == [
        "10",
        "3",
        "2",
    ]


def test_a_notification_during_a_resync_wins_over_the_listing(js):
    """A VM change that arrives while the lists are being fetched is applied after them, so
    the older listing never undoes it; removals drop the object."""
    result = js("""const s = new m.store.Store();
        s.beginSync();
        s.apply('|engine|vm|v1', {vm: {id: 'v1', name: 'a', status: 'Up'}});
        s.endSync({hosts: [{id: 'h1', name: 'h'}], vms: [{id: 'v1', name: 'a', status: 'Down'}],
                   jobs: [], events: []});
        const status = s.vms.get('v1').status;
        s.apply('|engine|removed|h1', {kind: 'host', id: 'h1'});
        return [status, s.hosts.size, s.newestEventId()]""")
    assert result == ["Up", 0, None]


def test_uptime_counts_from_the_start_seen_or_the_listed_state_change(js):
    """A VM listed running counts from its state change; one seen starting counts from then;
    pausing keeps the count; stopping ends it."""
    result = js("""const t0 = Date.parse('2027-01-01T00:00:00Z');
        const vm = (status, at = null) => ({id: 'v', status, status_updated: at});
        const listed = vm('Up', '2027-01-01T00:00:00.000Z');
        const a = m.store.runningSince(listed, null, undefined, t0 + 5000);
        const b = m.store.runningSince(vm('PoweringUp'), vm('Down'), undefined, t0 + 9000);
        const c = m.store.runningSince(vm('Paused'), vm('Up'), t0, t0 + 9000);
        const d = m.store.runningSince(vm('Down'), vm('Up'), t0, t0 + 9000);
        return [a - t0, b - t0, c - t0, d]""")
    assert result == [0, 9000, 0, None]


def test_formatting(js):
    """Percentages, memory sizes, durations and severity ranks read as intended."""
    assert js("""const f = m.format;
        return [f.percent(3.14159), f.percent(42.4), f.percent(null), f.mib(512), f.mib(1536),
                f.mib(16384), f.duration(59), f.duration(200), f.duration(7300), f.duration(90000),
                f.severityAtLeast('error', 'warning'), f.severityAtLeast('normal', 'warning'),
                f.hostCpu({cpu_user: 10, cpu_sys: 5}),
                f.stateClass('PreparingForMaintenance')]""") == [
        "3.1 %",
        "42 %",
        "\u2014",
        "512 MiB",
        "1.5 GiB",
        "16 GiB",
        "59 s",
        "3 min 20 s",
        "2 h 1 min",
        "1 d 1 h",
        True,
        False,
        15,
        "preparingformaintenance",
    ]


def test_chart_points_scale_and_skip_missing_values(js):
    """Samples map oldest-left to newest-right and 0..100 bottom to top; missing values are
    left out; the chart is an SVG polyline labelled with the latest value."""
    points, label, count = js("""const s = [{t: 2000, v: 100}, {t: 0, v: 0}, {t: 1000, v: null}];
        const chart = m.charts.lineChart('CPU', [{t: 0, v: 0}, {t: 1000, v: 50}]);
        return [m.charts.chartPoints(s, {width: 104, height: 104}),
                chart.querySelector('svg').getAttribute('aria-label'),
                chart.querySelector('polyline').getAttribute('points').split(' ').length]""")
    assert points == [[4, 100], [100, 4]]
    assert label == "CPU: 50 % now, 2 samples"
    assert count == 2


def test_event_filters(js):
    """The event filter keeps a minimum severity, one object's events and a text match."""
    result = js("""const ev = [
          {id: '3', severity: 'error', type: 'VM_DOWN_ERROR', message: 'web down', vm_id: 'v'},
          {id: '2', severity: 'normal', type: 'VM_ADDED', message: 'web defined', vm_id: 'v'},
          {id: '1', severity: 'warning', type: 'HOST_DOWN', message: 'h down', host_id: 'h'}];
        const ids = (o) => m.eventlog.filterEvents(ev, o).map((e) => e.id);
        return [ids({severity: 'warning'}), ids({vmId: 'v'}), ids({text: 'DEFINED'}),
                m.eventlog.explanationOf(
                  {details: {explanation: {h1: ['too small'], h2: 'x'}}})]""")
    assert result == [["3", "1"], ["3", "2"], ["2"], [["h1", ["too small"]], ["h2", ["x"]]]]


def test_job_outcomes_and_the_actions_offered(js):
    """A job reads as its progress, then its outcome; actions follow the state."""
    assert js("""const a = m.actions;
        return [a.jobSummary({status: 'running', progress: 50}),
                a.jobSummary({status: 'succeeded', result: {host: 'h1', status: 'Up'}}),
                a.jobSummary({status: 'failed', error: 'no luck'}),
                a.vmActions('Down'), a.vmActions('Paused'), a.hostActions('Maintenance')]""") == [
        "running, 50 %",
        "succeeded on h1 (Up)",
        "failed: no luck",
        ["start", "remove"],
        ["resume", "stop"],
        ["activate", "remove"],
    ]


def test_html_from_the_server_becomes_text_in_every_builder(js):
    """Strings given to the DOM builder and the refusal table stay text: no element is made
    from them and no handler runs."""
    result = js("""const evil = '<img src=x onerror="window.__pwned=1">';
        const node = m.dom.h('p', {title: evil}, evil);
        const table = m.actions.refusalTable([{name: evil, passed: false, score: null,
                                               reasons: [evil]}]);
        document.body.append(node, table);
        await new Promise((r) => setTimeout(r, 50));
        return [node.textContent === evil, node.getAttribute('title') === evil,
                document.querySelectorAll('img').length, window.__pwned === undefined,
                table.querySelector('th[scope=row]').textContent === evil]""")
    assert result == [True, True, 0, True, True]


def test_sync_children_updates_in_place_and_keeps_order(js):
    """Keyed children are reused (focus survives), reordered, added and removed."""
    result = js("""const ul = document.createElement('ul');
        const make = (x) => m.dom.h('li');
        const set = (el, x) => { el.textContent = x; };
        m.dom.syncChildren(ul, ['a', 'b', 'c'], (x) => x, make, set);
        const b = ul.children[1];
        m.dom.syncChildren(ul, ['c', 'b', 'd'], (x) => x, make, set);
        return [[...ul.children].map((li) => li.textContent), ul.children[1] === b]""")
    assert result == [["c", "b", "d"], True]


def test_reconnect_backoff_and_api_url(js):
    """Reconnection waits double from 0.5 s to at most 8 s; the API URL follows the page's
    scheme and host."""
    assert js("""return [[0, 1, 2, 3, 4, 5, 9].map((n) => m.api.backoffDelay(n)),
                        m.api.apiUrl({protocol: 'https:', host: 'e.example:8443'}),
                        m.api.apiUrl({protocol: 'http:', host: '127.0.0.1:8080'})]""") == [
        [0.5, 1, 2, 4, 8, 8, 8],
        "wss://e.example:8443/api",
        "ws://127.0.0.1:8080/api",
    ]


def test_serial_fallback_text_drops_escape_sequences(js):
    """Without xterm.js, terminal output is shown with colour codes and carriage returns
    removed."""
    assert js(r"""return m.serial.plainText('\x1b[1;32mok\x1b[0m\r\nline\rtwo')""") == (
        "ok\nlinetwo"
    )
