// The hosts table and the VMs table, updated in place by key so that live changes never
// take the keyboard focus away from a button or a link in them.

import {
  act, confirmingButton, HOST_VERBS, hostActions, VM_VERBS, vmActions,
} from "./actions.js";
import { h, setText, syncChildren } from "./dom.js";
import { duration, hostCpu, mib, percent, stateClass } from "./format.js";

export const hostHref = (id) => `#/hosts/${encodeURIComponent(id)}`;
export const vmHref = (id) => `#/vms/${encodeURIComponent(id)}`;

/** A state badge: the state's name (never colour alone) and why, when there is a reason. */
function setState(cell, status, reason) {
  let badge = cell.firstElementChild;
  if (!badge) {
    badge = h("span");
    cell.append(badge);
  }
  badge.className = `state state-${stateClass(status)}`;
  setText(badge, status);
  badge.title = reason || "";
  let why = badge.nextElementSibling;
  if (reason && !why) {
    why = h("span", { class: "state-reason" });
    cell.append(why);
  }
  if (why) {
    if (reason) setText(why, reason);
    else why.remove();
  }
}

function nameLink(cell, href, name) {
  let link = cell.firstElementChild;
  if (!link) {
    link = h("a");
    cell.append(link);
  }
  link.href = href;
  setText(link, name);
}

function table(caption, columns, body) {
  return h(
    "table",
    { class: "grid" },
    h("caption", { class: "visually-hidden", text: caption }),
    h("thead", {}, h("tr", {}, columns.map((label) => h("th", { scope: "col", text: label })))),
    body,
  );
}

/** The hosts: state, CPU, memory, VM count, actions. */
export class HostTable {
  constructor(ctx, caption = "Hosts") {
    this.ctx = ctx;
    this.body = h("tbody");
    this.empty = h("p", { class: "empty", text: "No hosts yet: add one below." });
    this.element = h("div", { class: "table-wrap" },
      table(caption, ["Name", "Address", "State", "CPU", "Memory", "VMs", "Actions"], this.body),
      this.empty);
  }

  render(hosts) {
    this.empty.hidden = hosts.length > 0;
    syncChildren(this.body, hosts, (host) => host.id,
      () => h("tr", {}, Array.from({ length: 7 }, () => h("td"))),
      (row, host) => this.update(row, host));
  }

  update(row, host) {
    const [name, address, state, cpu, memory, vms, actions] = row.children;
    const stats = host.statistics || {};
    nameLink(name, hostHref(host.id), host.name);
    setText(address, `${host.address}:${host.port}`);
    setState(state, host.status, host.status_reason);
    setText(cpu, percent(hostCpu(host.statistics)));
    setText(memory, host.mem_total_mib
      ? `${percent(stats.mem_used_percent)} of ${mib(host.mem_total_mib)}`
      : percent(stats.mem_used_percent));
    const counted = this.ctx.store.vmList(host.id).length;
    setText(vms, stats.vm_count ?? counted);
    const names = hostActions(host.status);
    const key = `${names.join(",")}|${host.name}`;
    if (actions.dataset.key !== key) {
      actions.dataset.key = key;
      actions.replaceChildren(...hostButtons(this.ctx, host, names));
    }
  }
}

/** Buttons for a host's actions (`names` from hostActions). */
export function hostButtons(ctx, host, names) {
  return names.map((action) => {
    const [label, method] = HOST_VERBS[action];
    const title = `${label} host \u201c${host.name}\u201d`;
    const run = () => act(ctx, title, method, { id: host.id }, "removed");
    if (action === "remove") return confirmingButton(label, title, run);
    return h("button", { type: "button", "aria-label": title, text: label, on: { click: run } });
  });
}

/** The VMs: state, host, CPU, memory, uptime, actions. */
export class VmTable {
  constructor(ctx, caption = "Virtual machines") {
    this.ctx = ctx;
    this.body = h("tbody");
    this.empty = h("p", { class: "empty", text: "No virtual machines." });
    this.element = h("div", { class: "table-wrap" },
      table(caption, ["Name", "State", "Host", "CPU", "Memory", "Uptime", "Actions"], this.body),
      this.empty);
  }

  render(vms) {
    this.empty.hidden = vms.length > 0;
    syncChildren(this.body, vms, (vm) => vm.id,
      () => h("tr", {}, Array.from({ length: 7 }, () => h("td"))),
      (row, vm) => this.update(row, vm));
  }

  update(row, vm) {
    const [name, state, host, cpu, memory, up, actions] = row.children;
    const stats = vm.statistics || {};
    nameLink(name, vmHref(vm.id), vm.name);
    setState(state, vm.status, vm.status === "Down" ? vm.exit_message : "");
    if (vm.run_on_host_id) nameLink(host, hostHref(vm.run_on_host_id),
                                    this.ctx.store.nameOf(vm.run_on_host_id));
    else host.replaceChildren();
    setText(cpu, percent(stats.cpu_percent));
    setText(memory, `${mib(vm.memory_mib)}${stats.mem_percent != null
      ? ` (${percent(stats.mem_percent)} used)` : ""}`);
    setText(up, duration(this.ctx.store.uptime(vm.id)));
    const names = vmActions(vm.status);
    const key = `${names.join(",")}|${vm.name}`;
    if (actions.dataset.key !== key) {
      actions.dataset.key = key;
      actions.replaceChildren(...vmButtons(this.ctx, vm, names));
    }
  }
}

/** Buttons for a VM's actions; `options()` may add params (a chosen host) at click time. */
export function vmButtons(ctx, vm, names, options = () => ({})) {
  return names.map((action) => {
    const [label, method] = VM_VERBS[action];
    const title = `${label} VM \u201c${vm.name}\u201d`;
    const run = () => {
      const extra = action === "start" || action === "migrate" ? options() : {};
      return act(ctx, title, method, { id: vm.id, ...extra }, "removed");
    };
    if (action === "remove") return confirmingButton(label, title, run);
    return h("button", { type: "button", "aria-label": title, text: label, on: { click: run } });
  });
}
