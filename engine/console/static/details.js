// Host and VM detail views: facts, actions, small charts of recent CPU and memory (history
// from the engine's stored statistics, then live samples), the object's events, and for a
// VM its serial console.

import { lineChart } from "./charts.js";
import { h, replace, setText } from "./dom.js";
import { EventLog } from "./eventlog.js";
import {
  bytes, clock, DASH, duration, hostCpu, mib, percent, RUNNING,
} from "./format.js";
import { SerialView } from "./serial.js";
import {
  hostButtons, hostHref, VmTable, vmButtons, vmHref,
} from "./tables.js";
import { hostActions, vmActions } from "./actions.js";

const MAX_SAMPLES = 180;

/** Pure: chart samples {t, cpu, mem} from statistics rows (host or VM). */
export function samplesOf(rows, kind) {
  return rows
    .filter((row) => row && row.time)
    .map((row) => ({
      t: Date.parse(row.time),
      cpu: kind === "host" ? hostCpu(row) : row.cpu_percent,
      mem: kind === "host" ? row.mem_used_percent : row.mem_percent,
    }));
}

/** Pure: samples with one more (a live one) appended when it is newer, at most `max`. */
export function addSample(samples, sample, max = MAX_SAMPLES) {
  if (samples.length && sample.t <= samples[samples.length - 1].t) return samples;
  return [...samples, sample].slice(-max);
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([term, value]) => [
    h("dt", { text: term }), h("dd", { text: value ?? DASH }),
  ]));
}

/** What both detail views share: charts from history plus live samples, and events. */
class Detail {
  constructor(ctx, kind, id) {
    this.ctx = ctx;
    this.kind = kind;
    this.id = id;
    this.samples = [];
    this.title = h("h1", { tabindex: "-1" });
    this.facts = h("div");
    this.actions = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
    this.charts = h("div", { class: "charts" });
    this.events = new EventLog(ctx.store, {
      title: "Events",
      [kind === "host" ? "hostId" : "vmId"]: id,
      link: (k, target) => (k === "host" ? hostHref(target) : vmHref(target)),
    });
  }

  /** Fetch the statistics history (again after a reconnect). */
  async load() {
    const verb = this.kind === "host" ? "Hosts.statistics" : "VMs.statistics";
    try {
      const rows = await this.ctx.call(verb, { id: this.id, limit: MAX_SAMPLES });
      this.samples = samplesOf(rows, this.kind);
    } catch {
      this.samples = []; // a removed object or a lost connection: the view says so elsewhere
    }
    this.live(this.current());
    this.renderCharts();
  }

  /** Append the object's latest statistics as a sample. */
  live(object) {
    const stats = object?.statistics;
    if (!stats) return;
    const [sample] = samplesOf([{ ...stats, time: stats.time || new Date().toISOString() }],
                               this.kind);
    const before = this.samples;
    this.samples = addSample(this.samples, sample);
    if (this.samples !== before) this.renderCharts();
  }

  /** Reconnected: fetch the history again. */
  async resync() {
    await this.load();
  }

  /** The connection dropped. */
  lost() {}

  /** A console notification (VM views only). */
  console() {}

  /** Leaving the view. */
  close() {}

  renderCharts() {
    const series = (key) => this.samples.map((s) => ({ t: s.t, v: s[key] }));
    replace(this.charts, lineChart("CPU", series("cpu")), lineChart("Memory used", series("mem")));
  }
}

export class HostDetail extends Detail {
  constructor(ctx, id) {
    super(ctx, "host", id);
    this.vms = new VmTable(ctx, "Virtual machines on this host");
    this.element = h("div", { class: "detail host-detail" },
      h("p", {}, h("a", { href: "#/", text: "\u2190 Dashboard" })),
      this.title, this.facts, this.actions,
      h("section", { "aria-label": "Recent load" }, h("h2", { text: "Recent load" }), this.charts),
      h("section", { "aria-label": "Virtual machines" },
        h("h2", { text: "Virtual machines on this host" }), this.vms.element),
      this.events.element);
  }

  current() {
    return this.ctx.store.hosts.get(this.id);
  }

  render(kind = "reset", id = null) {
    const host = this.current();
    if (!host) {
      setText(this.title, "Host not found");
      replace(this.facts, h("p", { text: "This host does not exist (any more)." }));
      this.actions.replaceChildren();
      return;
    }
    if (kind === "host" && id === this.id) this.live(host);
    if (kind === "event") return this.events.render();
    setText(this.title, `Host ${host.name}`);
    const stats = host.statistics || {};
    replace(this.facts, facts([
      ["State", host.status], ["Reason", host.status_reason || DASH],
      ["Address", `${host.address}:${host.port}`], ["CPUs", host.cpu_count],
      ["Memory", mib(host.mem_total_mib)], ["CPU in use", percent(hostCpu(host.statistics))],
      ["Memory in use", percent(stats.mem_used_percent)], ["Free memory", mib(stats.mem_free_mib)],
      ["VMs", stats.vm_count ?? this.ctx.store.vmList(host.id).length],
      ["KSM", stats.ksm_enabled ? `on, ${percent(stats.ksm_cpu_percent)} CPU` : "off"],
      ["Last seen", clock(host.last_seen)],
    ]));
    const names = hostActions(host.status);
    const key = names.join(",");
    if (this.actions.dataset.key !== key) {
      this.actions.dataset.key = key;
      this.actions.replaceChildren(...hostButtons(this.ctx, host, names));
    }
    this.vms.render(this.ctx.store.vmList(host.id));
    this.events.render();
  }
}

export class VmDetail extends Detail {
  constructor(ctx, id) {
    super(ctx, "vm", id);
    this.target = h("select", { id: "vm-target-host" });
    this.serial = null;
    this.serialBox = h("div");
    this.element = h("div", { class: "detail vm-detail" },
      h("p", {}, h("a", { href: "#/", text: "\u2190 Dashboard" })),
      this.title, this.facts,
      h("div", { class: "field" }, h("label", { for: this.target.id, text: "Host for start or migration" }),
        this.target),
      this.actions,
      h("section", { "aria-label": "Recent load" }, h("h2", { text: "Recent load" }), this.charts),
      h("section", { "aria-labelledby": "serial-title" },
        h("h2", { id: "serial-title", text: "Serial console" }), this.serialBox),
      this.events.element);
  }

  current() {
    return this.ctx.store.vms.get(this.id);
  }

  render(kind = "reset", id = null) {
    const vm = this.current();
    if (!vm) {
      setText(this.title, "VM not found");
      replace(this.facts, h("p", { text: "This virtual machine does not exist (any more)." }));
      this.actions.replaceChildren();
      return;
    }
    if (kind === "vm" && id === this.id) this.live(vm);
    if (kind === "event") return this.events.render();
    setText(this.title, `VM ${vm.name}`);
    const stats = vm.statistics || {};
    replace(this.facts, facts([
      ["State", vm.status], ["Host", vm.run_on_host_id ? this.ctx.store.nameOf(vm.run_on_host_id) : DASH],
      ["Uptime", duration(this.ctx.store.uptime(vm.id))], ["Memory", mib(vm.memory_mib)], ["vCPUs", vm.vcpus],
      ["CPU in use", percent(stats.cpu_percent)], ["Memory in use", percent(stats.mem_percent)],
      ["Balloon", stats.balloon_cur_kib != null ? mib(stats.balloon_cur_kib / 1024) : DASH],
      ["Network in / out", `${bytes(stats.net_rx_bytes)} / ${bytes(stats.net_tx_bytes)}`],
      ["Highly available", vm.ha ? "yes" : "no"], ["Kernel", vm.kernel || DASH],
      ["Last exit", vm.exit_message || vm.exit_reason || DASH],
    ]));
    this.renderTargets();
    const names = vmActions(vm.status);
    const key = `${names.join(",")}|${vm.name}`;
    if (this.actions.dataset.key !== key) {
      this.actions.dataset.key = key;
      const chosen = () => (this.target.value ? { host_id: this.target.value } : {});
      this.actions.replaceChildren(...vmButtons(this.ctx, vm, names, chosen));
    }
    this.followSerial(vm);
    this.events.render();
  }

  renderTargets() {
    const hosts = this.ctx.store.hostList();
    const key = hosts.map((host) => `${host.id}:${host.name}`).join("|");
    if (this.target.dataset.key === key) return;
    this.target.dataset.key = key;
    const chosen = this.target.value;
    this.target.replaceChildren(h("option", { value: "", text: "Any host (the scheduler picks)" }),
      ...hosts.map((host) => h("option", { value: host.id, text: host.name })));
    this.target.value = hosts.some((host) => host.id === chosen) ? chosen : "";
  }

  /** Attach the serial console once; the engine streams it wherever the VM runs. */
  followSerial(vm) {
    const running = RUNNING.has(vm.status);
    if (!this.serial) {
      this.serial = new SerialView(this.ctx.client, vm);
      replace(this.serialBox, this.serial.element);
      this.serial.attach(running);
    } else {
      this.serial.setRunning(running);
    }
  }

  /** A console notification for this VM. */
  console(params) {
    if (this.serial) this.serial.onData(params);
  }

  /** The connection dropped. */
  lost() {
    if (this.serial) this.serial.lost();
  }

  /** Reconnected: history again, the console from where it was. */
  async resync() {
    await this.load();
    const vm = this.current();
    if (this.serial && vm) this.serial.attach(RUNNING.has(vm.status));
  }

  close() {
    if (this.serial) this.serial.detach();
  }
}
