// The dashboard: hosts, VMs, recent actions and the event log, all live; and the forms to
// add a host and define a VM.

import { act, jobSummary } from "./actions.js";
import { h, setText, syncChildren } from "./dom.js";
import { EventLog } from "./eventlog.js";
import { clock } from "./format.js";
import { HostTable, hostHref, VmTable, vmHref } from "./tables.js";

let fields = 0;

/** A labelled form field; returns [wrapper, input]. */
function field(label, props) {
  const id = `field-${++fields}`;
  const input = h(props.tag || "input", { id, ...props, tag: null });
  return [h("div", { class: "field" }, h("label", { for: id, text: label }), input), input];
}

/** Pure: the params of VMs.add from the form's values (empty optional fields left out). */
export function vmParams(values) {
  const params = {
    name: values.name.trim(),
    memory_mib: Number(values.memory_mib),
    vcpus: Number(values.vcpus || 1),
    ha: Boolean(values.ha),
  };
  for (const key of ["kernel", "initrd", "cmdline"]) {
    const value = (values[key] || "").trim();
    if (value) params[key] = value;
  }
  return params;
}

export class Dashboard {
  constructor(ctx) {
    this.ctx = ctx;
    this.hosts = new HostTable(ctx);
    this.vms = new VmTable(ctx);
    this.jobs = h("tbody");
    this.events = new EventLog(ctx.store, {
      title: "Events",
      link: (kind, id) => (kind === "host" ? hostHref(id) : vmHref(id)),
    });
    this.element = h(
      "div",
      { class: "dashboard" },
      h("h1", { tabindex: "-1", text: "Dashboard" }),
      h("section", { "aria-labelledby": "hosts-title" },
        h("h2", { id: "hosts-title", text: "Hosts" }), this.hosts.element, this.hostForm()),
      h("section", { "aria-labelledby": "vms-title" },
        h("h2", { id: "vms-title", text: "Virtual machines" }), this.vms.element, this.vmForm()),
      h("section", { "aria-labelledby": "jobs-title" },
        h("h2", { id: "jobs-title", text: "Recent actions" }),
        h("table", { class: "grid jobs" },
          h("caption", { class: "visually-hidden", text: "Recent actions, newest first" }),
          h("thead", {}, h("tr", {}, ["Started", "Action", "Target", "Progress", "Outcome"].map(
            (label) => h("th", { scope: "col", text: label })))),
          this.jobs)),
      this.events.element,
    );
  }

  /** Re-render after a change of `kind` ("host", "vm", "job", "event", "reset", "tick"). */
  render(kind = "reset") {
    const all = kind === "reset" || kind === "tick";
    if (all || kind === "host" || kind === "vm") this.hosts.render(this.ctx.store.hostList());
    if (all || kind === "vm" || kind === "host") this.vms.render(this.ctx.store.vmList());
    if (all || kind === "job") this.renderJobs();
    if (all || kind === "event") this.events.render();
  }

  /** Reconnected: the store was refilled, and render() follows; nothing else to fetch. */
  resync() {}

  /** The connection dropped: the banner says so. */
  lost() {}

  /** Leaving the view. */
  close() {}

  renderJobs() {
    const store = this.ctx.store;
    syncChildren(this.jobs, store.jobList(8), (job) => job.id,
      () => h("tr", {}, h("td"), h("td"), h("td"), h("td", {}, h("progress", { max: 100 })), h("td")),
      (row, job) => {
        const [started, action, target, progress, outcome] = row.children;
        setText(started, clock(job.created));
        setText(action, job.action);
        setText(target, store.nameOf(job.target_id));
        const bar = progress.firstElementChild;
        bar.value = job.status === "succeeded" ? 100 : job.progress;
        bar.setAttribute("aria-label", `Progress of ${job.action} ${store.nameOf(job.target_id)}`);
        setText(outcome, jobSummary(job));
        row.className = `job-${job.status}`;
      });
  }

  hostForm() {
    const [name, nameInput] = field("Name", { name: "name", required: true, maxlength: 200 });
    const [address, addressInput] = field("Address", { name: "address", required: true,
                                                       placeholder: "hostname or IP" });
    const [port, portInput] = field("Port", { name: "port", type: "number", min: 1, max: 65535,
                                              value: 54321 });
    const [token, tokenInput] = field("Agent token (optional)", { name: "token",
                                                                  type: "password",
                                                                  autocomplete: "off" });
    const form = h("form", { class: "inline-form", "aria-label": "Add a host" },
      name, address, port, token, h("button", { type: "submit", text: "Add host" }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = `Add host \u201c${nameInput.value.trim()}\u201d`;
      const added = await act(this.ctx, title, "Hosts.add", {
        name: nameInput.value.trim(),
        address: addressInput.value.trim(),
        port: Number(portInput.value || 54321),
        token: tokenInput.value,
      }, "added; connecting to its agent");
      if (added) form.reset();
    });
    return h("details", { class: "add" }, h("summary", { text: "Add a host" }), form);
  }

  vmForm() {
    const [name, nameInput] = field("Name", { name: "name", required: true, maxlength: 200 });
    const [memory, memoryInput] = field("Memory (MiB)", { name: "memory_mib", type: "number",
                                                          min: 1, value: 256, required: true });
    const [vcpus, vcpusInput] = field("vCPUs", { name: "vcpus", type: "number", min: 1, value: 1 });
    const [kernel, kernelInput] = field("Kernel (optional)", { name: "kernel" });
    const [initrd, initrdInput] = field("Initrd (optional)", { name: "initrd" });
    const [cmdline, cmdlineInput] = field("Kernel command line (optional)", { name: "cmdline" });
    const haInput = h("input", { type: "checkbox", name: "ha", id: `field-${++fields}` });
    const ha = h("div", { class: "field checkbox" }, haInput,
      h("label", { for: haInput.id, text: "Highly available (restart elsewhere if its host fails)" }));
    const form = h("form", { class: "inline-form", "aria-label": "Define a virtual machine" },
      name, memory, vcpus, kernel, initrd, cmdline, ha,
      h("button", { type: "submit", text: "Define VM" }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const params = vmParams({
        name: nameInput.value, memory_mib: memoryInput.value, vcpus: vcpusInput.value,
        kernel: kernelInput.value, initrd: initrdInput.value, cmdline: cmdlineInput.value,
        ha: haInput.checked,
      });
      const added = await act(this.ctx, `Define VM \u201c${params.name}\u201d`, "VMs.add",
                              params, "defined");
      if (added) form.reset();
    });
    return h("details", { class: "add" }, h("summary", { text: "Define a virtual machine" }), form);
  }
}
