// Small line charts as hand-written SVG: recent CPU and memory of a host or VM.
//
// `chartPoints` is pure (samples in, polyline coordinates out); `lineChart` builds the SVG
// with a title and a text summary, so the figures are readable without seeing the chart.

import { h } from "./dom.js";
import { percent } from "./format.js";

export const WIDTH = 300;
export const HEIGHT = 80;
const PAD = 4;

/**
 * Pure: polyline coordinates of samples on a `width` x `height` plot from 0 to `max`.
 * @param {Array<{t: number, v: number|null}>} samples - time (ms) and value, any order;
 *   null values are skipped.
 * @returns {Array<[number, number]>} points, oldest first, x and y rounded to 0.1.
 */
export function chartPoints(samples, { width = WIDTH, height = HEIGHT, max = 100 } = {}) {
  const usable = samples
    .filter((s) => s.v !== null && s.v !== undefined && !Number.isNaN(Number(s.v)))
    .sort((a, b) => a.t - b.t);
  if (!usable.length) return [];
  const t0 = usable[0].t;
  const span = Math.max(usable[usable.length - 1].t - t0, 1);
  const round = (n) => Math.round(n * 10) / 10;
  return usable.map((s) => {
    const value = Math.min(Math.max(Number(s.v), 0), max);
    const x = usable.length === 1 ? width - PAD : PAD + ((s.t - t0) / span) * (width - 2 * PAD);
    const y = height - PAD - (value / max) * (height - 2 * PAD);
    return [round(x), round(y)];
  });
}

/**
 * An SVG line chart.
 * @param {string} label - what it shows ("CPU").
 * @param {Array<{t, v}>} samples
 * @returns {Element} a <figure> with the SVG and a caption naming the latest value.
 */
export function lineChart(label, samples, { max = 100 } = {}) {
  const points = chartPoints(samples, { max });
  const latest = samples.length ? samples[samples.length - 1].v : null;
  const summary = points.length
    ? `${label}: ${percent(latest)} now, ${points.length} sample${points.length === 1 ? "" : "s"}`
    : `${label}: no samples yet`;
  const grid = [25, 50, 75].map((level) => {
    const y = HEIGHT - PAD - (level / max) * (HEIGHT - 2 * PAD);
    return h("svg:line", { x1: 0, x2: WIDTH, y1: y, y2: y, class: "grid" });
  });
  const svg = h(
    "svg:svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: "chart",
      role: "img",
      "aria-label": summary,
      preserveAspectRatio: "none",
    },
    h("svg:title", { text: summary }),
    h("svg:rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: "frame" }),
    grid,
    points.length
      ? h("svg:polyline", { points: points.map((p) => p.join(",")).join(" "), class: "line" })
      : null,
  );
  return h("figure", { class: "chart-figure" }, svg, h("figcaption", { text: summary }));
}
