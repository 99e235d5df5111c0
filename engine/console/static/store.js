// The page's copy of the engine's state: hosts, VMs, jobs and the event log.
//
// Filled by listing (after a login or a reconnect) and kept current by the engine's
// notifications, never by polling. Views subscribe and re-render what changed. While a
// resynchronisation is under way, notifications are held and replayed on top of the fresh
// lists, so a change that raced the listing is never undone by it.

import { RUNNING } from "./format.js";

/** How many events the page keeps (newest first). */
export const EVENT_CAP = 500;

/** Jobs kept at most (the newest). */
export const JOB_CAP = 200;

/** Pure: `|engine|vm|<id>` -> {kind: "vm", id}; null for anything else. */
export function parseNotification(method) {
  const match = /^\|engine\|([a-z]+)\|(.+)$/.exec(method || "");
  return match ? { kind: match[1], id: match[2] } : null;
}

/** Pure: events merged by id, newest (highest id) first, at most `cap`. */
export function mergeEvents(existing, incoming, cap = EVENT_CAP) {
  const byId = new Map(existing.map((event) => [event.id, event]));
  for (const event of incoming) byId.set(event.id, event);
  return [...byId.values()].sort((a, b) => Number(b.id) - Number(a.id)).slice(0, cap);
}

/**
 * Pure: when a VM started running, as far as the page can tell (ms since the epoch), or null
 * when it is not running. The API has no start time: a VM already running when listed counts
 * from its last state change (`status_updated`); one seen starting counts from then.
 * @param {object|undefined} before - the VM as the page had it, and its `since`.
 */
export function runningSince(vm, before, beforeSince, now = Date.now()) {
  if (!RUNNING.has(vm.status)) return null;
  if (before && RUNNING.has(before.status) && beforeSince) return beforeSince;
  const stated = vm.status_updated ? Date.parse(vm.status_updated) : NaN;
  return before || Number.isNaN(stated) ? now : stated;
}

/** Pure: jobs newest first (by creation time, then id). */
export function sortJobs(jobs) {
  return [...jobs].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
}

export class Store {
  constructor() {
    this.hosts = new Map();
    this.vms = new Map();
    this.jobs = new Map();
    this.since = new Map();
    this.events = [];
    this.listeners = new Set();
    this.held = null;
  }

  /** Call `listener(kind, id)` on every change; returns a function that unsubscribes. */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(kind, id = null) {
    for (const listener of [...this.listeners]) listener(kind, id);
  }

  /** The id of the newest event the page has, or null. */
  newestEventId() {
    return this.events.length ? this.events[0].id : null;
  }

  /** Forget everything (logged out). */
  clear() {
    this.hosts.clear();
    this.vms.clear();
    this.jobs.clear();
    this.since.clear();
    this.events = [];
    this.emit("reset");
  }

  /** Hold notifications until `endSync` (a resynchronisation is starting). */
  beginSync() {
    this.held = [];
  }

  /**
   * Replace the state with fresh lists, then replay what arrived meanwhile.
   * @param {{hosts, vms, jobs, events}} lists - events are merged (missed ones added).
   */
  endSync({ hosts, vms, jobs, events }) {
    this.hosts = new Map(hosts.map((host) => [host.id, host]));
    const before = this.vms;
    this.vms = new Map();
    for (const vm of vms) this.putVm(vm, before.get(vm.id) || null);
    for (const id of this.since.keys()) if (!this.vms.has(id)) this.since.delete(id);
    for (const job of jobs) this.putJob(job);
    this.events = mergeEvents(this.events, events);
    const held = this.held || [];
    this.held = null;
    this.emit("reset");
    for (const [method, params] of held) this.apply(method, params);
  }

  /** Abandon a resynchronisation (the connection dropped again); replay nothing. */
  abortSync() {
    this.held = null;
  }

  /**
   * Apply one notification.
   * @returns {boolean} whether it was one of the store's.
   */
  apply(method, params) {
    const parsed = parseNotification(method);
    if (!parsed) return false;
    if (this.held && parsed.kind !== "session" && parsed.kind !== "console") {
      this.held.push([method, params]);
      return true;
    }
    switch (parsed.kind) {
      case "host":
        this.hosts.set(params.host.id, params.host);
        this.emit("host", params.host.id);
        return true;
      case "vm":
        this.putVm(params.vm, this.vms.get(params.vm.id) || null);
        this.emit("vm", params.vm.id);
        return true;
      case "job":
        this.putJob(params.job);
        this.emit("job", params.job.id);
        return true;
      case "event":
        this.events = mergeEvents(this.events, [params.event]);
        this.emit("event", params.event.id);
        return true;
      case "removed":
        (params.kind === "host" ? this.hosts : this.vms).delete(params.id);
        this.since.delete(params.id);
        this.emit(params.kind, params.id);
        return true;
      default:
        return false;
    }
  }

  putVm(vm, before) {
    const since = runningSince(vm, before, this.since.get(vm.id));
    if (since === null) this.since.delete(vm.id);
    else this.since.set(vm.id, since);
    this.vms.set(vm.id, vm);
  }

  putJob(job) {
    this.jobs.set(job.id, job);
    if (this.jobs.size > JOB_CAP) {
      for (const old of sortJobs([...this.jobs.values()]).slice(JOB_CAP)) this.jobs.delete(old.id);
    }
  }

  /** Seconds a VM has been running (see runningSince), or null. */
  uptime(id, now = Date.now()) {
    const since = this.since.get(id);
    return since === undefined ? null : Math.max(0, (now - since) / 1000);
  }

  /** Hosts by name. */
  hostList() {
    return [...this.hosts.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** VMs by name (of one host when `hostId` is given). */
  vmList(hostId = null) {
    const vms = [...this.vms.values()].filter((vm) => !hostId || vm.run_on_host_id === hostId);
    return vms.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Jobs newest first, at most `limit`. */
  jobList(limit = 10) {
    return sortJobs([...this.jobs.values()]).slice(0, limit);
  }

  /** A name for a host or VM id (the id itself when unknown). */
  nameOf(id) {
    if (!id) return "";
    return (this.hosts.get(id) || this.vms.get(id) || { name: id }).name;
  }
}
