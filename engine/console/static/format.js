// Pure: how numbers, times and states read on the page. No DOM, no state.

export const DASH = "\u2014";

/** "12.3 %" (one decimal below 10, none above), or a dash. */
export function percent(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return DASH;
  const n = Number(value);
  return `${n < 10 ? n.toFixed(1) : n.toFixed(0)} %`;
}

/** Memory given in MiB: "512 MiB", "1.5 GiB", or a dash. */
export function mib(value) {
  if (value === null || value === undefined) return DASH;
  const n = Number(value);
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} TiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} GiB`;
  return `${Math.round(n)} MiB`;
}

/** A byte count: "1.2 MB"-style in binary units, or a dash. */
export function bytes(value) {
  if (value === null || value === undefined) return DASH;
  let n = Number(value);
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (n < 1024) return `${unit === "B" ? n : n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
  return `${n.toFixed(1)} TiB`;
}

/** A duration in seconds: "45 s", "3 min 20 s", "5 h 2 min", "2 d 3 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return DASH;
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A wire time (ISO 8601) as local time: "14:03:07", with the date when not `today`. */
export function clock(iso, today = new Date()) {
  if (!iso) return DASH;
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return DASH;
  const time = t.toLocaleTimeString([], { hour12: false });
  return t.toDateString() === today.toDateString() ? time : `${t.toLocaleDateString()} ${time}`;
}

/** A host's CPU use in percent (user + system), or null. */
export function hostCpu(statistics) {
  if (!statistics || statistics.cpu_user === null || statistics.cpu_sys === null) return null;
  return Number(statistics.cpu_user) + Number(statistics.cpu_sys);
}

/** VM states in which it runs somewhere (it has a host, an uptime, a serial console). */
export const RUNNING = new Set([
  "WaitForLaunch", "PoweringUp", "Up", "PoweringDown", "RebootInProgress", "Paused",
  "MigratingFrom", "MigratingTo", "RestoringState", "SavingState", "NotResponding", "Unknown",
]);

/** Severities, mildest first (the event log's filter shows this one and worse). */
export const SEVERITIES = ["normal", "warning", "error", "alert"];

/** Whether an event of `severity` passes a minimum severity filter ("" passes all). */
export function severityAtLeast(severity, minimum) {
  if (!minimum) return true;
  return SEVERITIES.indexOf(severity) >= SEVERITIES.indexOf(minimum);
}

/** A state name as a CSS class suffix ("PreparingForMaintenance" -> "preparingformaintenance"). */
export function stateClass(status) {
  return String(status || "unknown").toLowerCase().replace(/[^a-z]/g, "");
}
