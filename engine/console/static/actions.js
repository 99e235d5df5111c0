// Actions and their outcomes: call a verb, then show what became of it.
//
// An action answers at once with a job; its notice follows the job live (the store's job
// notifications: state, a progress bar, then the outcome). A refused action (error 4092)
// shows the engine's reason and, for a placement, the scheduler's verdict on every host as a
// table. Other errors show the engine's message. Notices sit in one live region.

import { h, setText } from "./dom.js";

const MAX_NOTICES = 6;
const FINAL = new Set(["succeeded", "failed"]);

/** Pure: one line for a job's state ("running, 50 %", "succeeded: on host1 (Up)"). */
export function jobSummary(job) {
  if (job.status === "failed") return `failed: ${job.error || "no reason given"}`;
  if (job.status === "succeeded") {
    const result = job.result && typeof job.result === "object" ? job.result : {};
    const where = result.host ? ` on ${result.host}` : "";
    const state = result.status ? ` (${result.status})` : "";
    return `succeeded${where}${state}`;
  }
  return job.status === "running" ? `running, ${job.progress} %` : job.status;
}

/** A table of the scheduler's verdict on each host (the `hosts` of a Refusal). */
export function refusalTable(hosts) {
  return h(
    "table",
    { class: "refusal" },
    h("caption", { text: "What the scheduler said about each host" }),
    h("thead", {}, h("tr", {}, ["Host", "Verdict", "Score", "Reasons"].map(
      (label) => h("th", { scope: "col", text: label })))),
    h("tbody", {}, hosts.map((host) => h(
      "tr",
      { class: host.passed ? "passed" : "refused" },
      h("th", { scope: "row", text: host.name }),
      h("td", { text: host.passed ? "could run it" : "refused" }),
      h("td", { text: host.score === null || host.score === undefined ? "\u2014" : host.score }),
      h("td", {}, h("ul", {}, (host.reasons || []).map((reason) => h("li", { text: reason })))),
    ))),
  );
}

export class Notices {
  /**
   * @param {Element} container - an element with aria-live, where notices appear.
   * @param {Store} store - whose job changes move the notices along.
   */
  constructor(container, store) {
    this.container = container;
    this.store = store;
    this.byJob = new Map();
    store.subscribe((kind, id) => {
      if (kind === "job" && this.byJob.has(id)) this.updateJob(id);
      if (kind === "reset") for (const jobId of this.byJob.keys()) this.updateJob(jobId);
    });
  }

  /** Remove every notice (logged out). */
  clear() {
    this.container.replaceChildren();
    this.byJob.clear();
  }

  add(kind, title, ...body) {
    const notice = h(
      "div",
      { class: `notice notice-${kind}`, role: kind === "refused" || kind === "error" ? "alert" : null },
      h("p", { class: "notice-title" }, h("strong", { text: title })),
      body,
    );
    const dismiss = h("button", {
      type: "button",
      class: "dismiss",
      "aria-label": `Dismiss: ${title}`,
      text: "\u00d7",
      on: { click: () => this.remove(notice) },
    });
    notice.prepend(dismiss);
    this.container.prepend(notice);
    while (this.container.children.length > MAX_NOTICES) this.remove(this.container.lastElementChild);
    return notice;
  }

  remove(notice) {
    for (const [jobId, entry] of this.byJob) if (entry.notice === notice) this.byJob.delete(jobId);
    notice.remove();
  }

  /** Follow a job live until it ends. */
  job(title, job) {
    const state = h("p", { class: "job-state", "aria-live": "polite" });
    const progress = h("progress", { max: 100, value: job.progress, "aria-label": `Progress: ${title}` });
    const notice = this.add("running", title, progress, state);
    notice.dataset.job = job.id;
    this.byJob.set(job.id, { notice, state, progress });
    if (!this.store.jobs.has(job.id)) this.store.jobs.set(job.id, job);
    this.updateJob(job.id);
  }

  updateJob(jobId) {
    const entry = this.byJob.get(jobId);
    const job = this.store.jobs.get(jobId);
    if (!entry || !job) return;
    entry.progress.value = job.status === "succeeded" ? 100 : job.progress;
    setText(entry.state, jobSummary(job));
    entry.notice.className = `notice notice-${FINAL.has(job.status) ? job.status : "running"}`;
    if (FINAL.has(job.status)) {
      entry.progress.hidden = true;
      this.byJob.delete(jobId);
    }
  }

  /** An action the engine refused (error 4092): its reason and per-host verdicts. */
  refused(title, error) {
    const data = error.data || {};
    const hosts = Array.isArray(data.hosts) ? data.hosts : [];
    this.add(
      "refused",
      `${title}: refused`,
      h("p", { class: "reason", text: data.reason || error.message }),
      hosts.length ? refusalTable(hosts) : null,
      data.job_id ? h("p", { text: `Another action holds it: job ${data.job_id}.` }) : null,
    );
  }

  /** Any other failure. */
  error(title, error) {
    this.add("error", `${title}: failed`, h("p", { class: "reason", text: error.message }));
  }

  /** A plain message (an action that needs no job: added, removed). */
  done(title, text) {
    this.add("succeeded", title, h("p", { text }));
  }
}

/**
 * Run an action and report it in the notices.
 * @param {object} ctx - `call(method, params)` and `notices`.
 * @param {string} title - what it is, for people ("Start VM \u201cweb1\u201d").
 * @returns {Promise} the result, or null when it failed (already reported).
 */
export async function act(ctx, title, method, params, doneText = "done") {
  try {
    const result = await ctx.call(method, params);
    if (result && typeof result === "object" && "progress" in result && "status" in result) {
      ctx.notices.job(title, result);
    } else {
      ctx.notices.done(title, doneText);
    }
    return result;
  } catch (error) {
    if (error.code === 4092) ctx.notices.refused(title, error);
    else if (error.code !== 401) ctx.notices.error(title, error);
    return null;
  }
}

/** Which VM actions make sense in a state (the engine has the last word). */
export function vmActions(status) {
  switch (status) {
    case "Down":
      return ["start", "remove"];
    case "Up":
      return ["shutdown", "stop", "pause", "migrate"];
    case "Paused":
      return ["resume", "stop"];
    default:
      return ["stop"];
  }
}

/** Which host actions make sense in a state. */
export function hostActions(status) {
  switch (status) {
    case "Maintenance":
      return ["activate", "remove"];
    case "PreparingForMaintenance":
      return ["activate"];
    case "Up":
      return ["maintenance"];
    default:
      return ["maintenance", "remove"];
  }
}

export const VM_VERBS = {
  start: ["Start", "VMs.start"],
  stop: ["Power off", "VMs.stop"],
  shutdown: ["Shut down", "VMs.shutdown"],
  pause: ["Pause", "VMs.pause"],
  resume: ["Resume", "VMs.resume"],
  migrate: ["Migrate", "VMs.migrate"],
  remove: ["Remove", "VMs.remove"],
};

export const HOST_VERBS = {
  maintenance: ["Maintenance", "Hosts.maintenance"],
  activate: ["Activate", "Hosts.activate"],
  remove: ["Remove", "Hosts.remove"],
};

/**
 * A button that asks once more before it acts ("Remove" -> "Confirm remove"), instead of
 * a blocking dialog; it disarms itself after a few seconds.
 */
export function confirmingButton(label, accessibleName, onConfirm) {
  let armed = null;
  const button = h("button", { type: "button", class: "danger", "aria-label": accessibleName,
                               text: label });
  button.addEventListener("click", () => {
    if (!armed) {
      button.textContent = `Confirm ${label.toLowerCase()}`;
      button.setAttribute("aria-label", `Confirm: ${accessibleName}`);
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.setAttribute("aria-label", accessibleName);
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.setAttribute("aria-label", accessibleName);
    onConfirm();
  });
  return button;
}
