// A VM's serial console, read-only: the guest's serial output, live, in xterm.js.
//
// Attaching reads the tail (VMs.console), then asks the engine to stream what follows
// (VMs.consoleWatch from the `next` offset); chunks arrive as `|engine|console|<vmId>`
// notifications. After a reconnect the view re-attaches from the last offset it showed, so
// nothing is lost or shown twice. xterm.js is vendored into ./vendor at build time; without
// it the output goes into a plain <pre> (escape sequences removed).

import { h, setText } from "./dom.js";

let terminalClass = null;

/** The xterm.js Terminal class, or null when it is not vendored (loaded once). */
export function loadTerminal() {
  if (!terminalClass) {
    terminalClass = import("./vendor/xterm.mjs").then(
      (module) => module.Terminal,
      () => null,
    );
  }
  return terminalClass;
}

/** Pure: terminal output as plain text (escape sequences and carriage returns removed). */
export function plainText(data) {
  return String(data)
    .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "")
    .replace(/\x1b[()][A-Za-z0-9]/g, "")
    .replace(/\r(?!\n)/g, "")
    .replace(/\r\n/g, "\n");
}

const FALLBACK_LIMIT = 200000;

export class SerialView {
  /**
   * @param {ApiClient} client
   * @param {object} vm - the VM (its id and name label the view).
   */
  constructor(client, vm) {
    this.client = client;
    this.vmId = vm.id;
    this.next = null;
    this.terminal = null;
    this.fallback = null;
    this.attached = false;
    this.closed = false;
    this.status = h("p", { class: "serial-status", role: "status" });
    this.screen = h("div", {
      class: "serial-screen",
      role: "region",
      "aria-label": `Serial console of ${vm.name}`,
      tabindex: "0",
    });
    this.element = h("div", { class: "serial" }, this.status, this.screen);
  }

  /**
   * Open the terminal, show the tail (when the VM runs) and follow the output, which the
   * engine streams whatever host the VM runs on and while it is down. Never throws.
   * @param {boolean} running - whether the VM runs now (a stopped VM has no tail to read).
   */
  async attach(running) {
    this.closed = false;
    await this.ensureScreen();
    if (this.closed) return;
    setText(this.status, "Connecting to the serial console\u2026");
    try {
      if (running) await this.readTail();
      if (this.closed) return;
      const watch = await this.client.call("VMs.consoleWatch", { id: this.vmId, offset: this.next });
      if (this.closed) return this.unwatch();
      if (this.next === null && typeof watch?.offset === "number") this.next = watch.offset;
      this.attached = true;
      this.setRunning(running);
    } catch (error) {
      this.attached = false;
      setText(this.status, `Serial console unavailable: ${error.message}`);
    }
  }

  /** Read what the page has not shown yet (the tail, or from the last offset shown). */
  async readTail() {
    const params = { id: this.vmId };
    if (this.next !== null) params.offset = this.next;
    try {
      const tail = await this.client.call("VMs.console", params);
      if (this.closed) return;
      this.write(tail.data, tail.reset && this.next !== null);
      this.next = tail.next;
    } catch (error) {
      if (error.code !== 409) throw error; // 409: it runs nowhere (yet); the stream follows
    }
  }

  /** Say whether output can be expected. */
  setRunning(running) {
    if (!this.attached) return;
    setText(this.status, running
      ? "Live: the guest's serial output (read-only)."
      : "The VM is not running; its output appears here when it starts.");
  }

  /** A `|engine|console|<vmId>` notification's params. */
  onData(params) {
    if (!params || this.closed) return;
    if (params.reset) {
      this.write(params.data, true);
    } else if (this.next !== null && typeof params.next === "number" && params.next <= this.next) {
      return; // already shown (the tail and the stream overlapped)
    } else {
      this.write(params.data, false);
    }
    if (typeof params.next === "number") this.next = params.next;
  }

  /** Stop following (leaving the view); the engine stops streaming to this page. */
  async detach() {
    this.closed = true;
    await this.unwatch();
    if (this.terminal) this.terminal.dispose();
    this.terminal = null;
  }

  async unwatch() {
    if (!this.attached) return;
    this.attached = false;
    try {
      await this.client.call("VMs.consoleUnwatch", { id: this.vmId });
    } catch {
      // the connection is gone, and the engine forgot the watch with it
    }
  }

  /** The connection dropped: the watch ended with it. */
  lost() {
    this.attached = false;
    if (!this.closed) setText(this.status, "Connection lost; the console resumes on reconnect.");
  }

  async ensureScreen() {
    if (this.terminal || this.fallback) return;
    const Terminal = await loadTerminal();
    if (this.closed) return;
    if (Terminal) {
      this.terminal = new Terminal({
        convertEol: true,
        disableStdin: true,
        cursorBlink: false,
        scrollback: 5000,
        rows: 24,
        cols: 100,
        fontSize: 13,
      });
      this.terminal.open(this.screen);
    } else {
      this.fallback = h("pre", { class: "serial-text" });
      this.screen.append(this.fallback);
    }
  }

  write(data, reset) {
    if (this.terminal) {
      if (reset) this.terminal.reset();
      if (data) this.terminal.write(data);
    } else if (this.fallback) {
      const text = (reset ? "" : this.fallback.textContent) + plainText(data || "");
      this.fallback.textContent = text.slice(-FALLBACK_LIMIT);
    }
  }
}
