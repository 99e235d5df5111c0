"""A real guest's serial console in the web console: the engine starts the tiny test guest
(contrib/guest-image) on an agent driving embedded QEMU (TCG), and the VM's view shows what
the guest prints, live, in xterm.js.

The agent is a child process with its own embedded libvirt root, as in
tests/engine/test_engine_qemu.py; the engine is another child process.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_harness import (
    EngineProcess,
    cleanup,
    log_in,
    scratch_dir,
    shot,
    wait_for,
)
from guests import READY_MARKER
from playwright.sync_api import expect

from engine.console.vendor import VENDOR_DIR
from vdsmlike.agentproc import AgentProcess, kill_guests_under

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest.fixture(scope="module")
def qemu_engine() -> Iterator[tuple[EngineProcess, str]]:
    """An engine with one host: an agent on embedded QEMU. :returns: (engine, host id)."""
    base = scratch_dir("vl-serial-")
    workdir = Path(tempfile.mkdtemp(prefix="vlc-", dir="/tmp"))  # short: libvirt's sockets
    engine = EngineProcess(base)
    agent = AgentProcess(
        str(workdir),
        libvirt_uri=f"qemu:///embed?root={workdir}/root",
        vm_sample_interval=1.0,
        host_sample_interval=1.0,
        guest_wait_timeout=2.0,
    )
    try:
        agent.launch()
        engine.start()
        url = wait_for(agent.url, timeout=60, interval=0.05, what="the QEMU agent")
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        host = engine.call("Hosts.add", {"name": "qemu-1", "address": "127.0.0.1", "port": port})
        engine.wait_host(host["id"], "Up", timeout=60)
        yield engine, host["id"]
    finally:
        engine.stop()
        proc = agent._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        kill_guests_under(str(workdir))
        cleanup(base)
        cleanup(workdir)


def screen_text(page: Any) -> str:
    """What the terminal shows (xterm's rows), or the plain-text fallback."""
    return page.locator(".serial-screen").inner_text()


def test_serial_console_shows_the_guests_output_live(qemu_engine, guest_image, new_page):
    """Opened on a running real guest, the VM's serial console shows the guest's ready marker
    and then its ticks, live; after the page's connection drops and returns, the console
    picks up where it was without repeating what it showed."""
    engine, _host = qemu_engine
    vm = engine.add_vm(
        "serial-guest",
        memory_mib=192,
        kernel=str(guest_image / "vmlinuz"),
        initrd=str(guest_image / "initrd.img"),
        cmdline="console=ttyS0 quiet",
    )
    engine.call("VMs.start", {"id": vm["id"]})
    engine.wait_vm(vm["id"], "Up", timeout=60)
    page = new_page()
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/api$"), route)
    log_in(page, engine.url, engine.password)
    page.goto(f"{engine.url}#/vms/{vm['id']}")
    expect(page.get_by_role("heading", name="VM serial-guest")).to_be_visible()
    console = page.get_by_role("region", name="Serial console of serial-guest")
    expect(console).to_be_visible()
    if (VENDOR_DIR / "xterm.mjs").exists():  # the vendored xterm.js, else the plain fallback
        expect(page.locator(".xterm-rows")).to_have_count(1)
    else:
        expect(page.locator("pre.serial-text")).to_have_count(1)
    wait_for(
        lambda: screen_text(page),
        lambda text: READY_MARKER in text,
        timeout=60,
        interval=0.3,
        what="the guest's ready marker on the page",
    )
    expect(page.locator(".serial-status")).to_have_text(re.compile("^Live"))
    ticks = lambda: [int(n) for n in re.findall(r"tick (\d+)", screen_text(page))]  # noqa: E731
    first = wait_for(ticks, bool, timeout=30, interval=0.3, what="a tick")[-1]
    wait_for(
        ticks,
        lambda seen: seen[-1] >= first + 2,
        timeout=30,
        interval=0.3,
        what="later ticks arriving live",
    )
    shot(page, "console")
    page.evaluate("window.__sameDocument = true")
    seen = ticks()
    sockets[-1].close(code=4000, reason="dropped by the test")
    banner = page.get_by_role("alert").filter(has_text="Connection to the engine lost")
    expect(banner).to_be_visible()
    expect(banner).to_be_hidden(timeout=20_000)
    wait_for(
        ticks,
        lambda now: now[-1] >= seen[-1] + 2,
        timeout=40,
        interval=0.3,
        what="ticks after the reconnection",
    )
    shown = ticks()
    assert shown == sorted(set(shown)), f"ticks repeated or out of order: {shown}"
    assert page.evaluate("window.__sameDocument") is True
