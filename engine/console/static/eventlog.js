// The event log: newest first, severities colour-coded (and named, not by colour alone),
// filterable by minimum severity and by text, live from the store.

import { h, setText, syncChildren } from "./dom.js";
import { clock, SEVERITIES, severityAtLeast } from "./format.js";

/** Pure: the events a filter lets through, newest first, at most `limit`. */
export function filterEvents(events, { severity = "", text = "", hostId = null, vmId = null,
                                       limit = 200 } = {}) {
  const needle = text.trim().toLowerCase();
  return events
    .filter((event) => severityAtLeast(event.severity, severity))
    .filter((event) => !hostId || event.host_id === hostId)
    .filter((event) => !vmId || event.vm_id === vmId)
    .filter((event) => !needle || `${event.type} ${event.message}`.toLowerCase().includes(needle))
    .slice(0, limit);
}

/** Pure: the scheduler's explanation in an event's details as [[host, [reasons]]]. */
export function explanationOf(event) {
  const explained = event?.details?.explanation;
  if (!explained || typeof explained !== "object") return [];
  return Object.entries(explained).map(([host, reasons]) => [
    host,
    Array.isArray(reasons) ? reasons.map(String) : [String(reasons)],
  ]);
}

let counter = 0;

export class EventLog {
  /**
   * @param {Store} store
   * @param {object} options - `hostId` / `vmId` to show one object's events; `title`.
   * @param {(kind, id) => string} options.link - the href of a host or VM.
   */
  constructor(store, { hostId = null, vmId = null, title = "Events", link }) {
    this.store = store;
    this.scope = { hostId, vmId };
    this.link = link;
    const n = ++counter;
    this.severity = h(
      "select",
      { id: `event-severity-${n}`, on: { change: () => this.render() } },
      h("option", { value: "", text: "All severities" }),
      SEVERITIES.slice(1).map((s) => h("option", { value: s, text: `${s} and worse` })),
    );
    this.text = h("input", {
      id: `event-text-${n}`,
      type: "search",
      placeholder: "type or message",
      on: { input: () => this.render() },
    });
    this.rows = h("tbody");
    this.count = h("p", { class: "count", "aria-live": "polite" });
    this.element = h(
      "section",
      { class: "event-log", "aria-labelledby": `event-title-${n}` },
      h("h2", { id: `event-title-${n}`, text: title }),
      h(
        "div",
        { class: "filters", role: "search" },
        h("label", { for: this.severity.id, text: "Minimum severity" }),
        this.severity,
        h("label", { for: this.text.id, text: "Filter events" }),
        this.text,
      ),
      this.count,
      h(
        "table",
        { class: "events" },
        h("caption", { class: "visually-hidden", text: `${title}, newest first` }),
        h(
          "thead",
          {},
          h("tr", {}, ["Time", "Severity", "Type", "Message", "About"].map(
            (label) => h("th", { scope: "col", text: label }),
          )),
        ),
        this.rows,
      ),
    );
  }

  render() {
    const shown = filterEvents(this.store.events, {
      severity: this.severity.value,
      text: this.text.value,
      ...this.scope,
    });
    setText(this.count, `${shown.length} event${shown.length === 1 ? "" : "s"} shown`);
    syncChildren(this.rows, shown, (event) => event.id, () => this.createRow(), (row, event) =>
      this.updateRow(row, event));
  }

  createRow() {
    return h("tr", {}, h("td"), h("td"), h("td"), h("td"), h("td"));
  }

  updateRow(row, event) {
    if (row.dataset.rendered === event.id) return; // events never change
    row.dataset.rendered = event.id;
    row.className = `severity-${SEVERITIES.includes(event.severity) ? event.severity : "normal"}`;
    const [time, severity, type, message, about] = row.children;
    setText(time, clock(event.time));
    time.title = event.time || "";
    severity.replaceChildren(h("span", { class: "badge", text: event.severity }));
    setText(type, event.type);
    message.replaceChildren(event.message);
    const explained = explanationOf(event);
    if (explained.length) message.append(explanationDetails(explained));
    about.replaceChildren(...this.aboutLinks(event));
  }

  aboutLinks(event) {
    const links = [];
    if (event.host_id) {
      links.push(h("a", { href: this.link("host", event.host_id),
                          text: this.store.nameOf(event.host_id) }));
    }
    if (event.vm_id) {
      if (links.length) links.push(" ");
      links.push(h("a", { href: this.link("vm", event.vm_id),
                          text: this.store.nameOf(event.vm_id) }));
    }
    return links;
  }
}

/** A <details> listing, per host, why the scheduler refused or chose it. */
function explanationDetails(explained) {
  return h(
    "details",
    { class: "explanation" },
    h("summary", { text: "Per-host explanation" }),
    h("ul", {}, explained.map(([host, reasons]) =>
      h("li", {}, h("strong", { text: host }), ": ", reasons.join("; ")))),
  );
}
