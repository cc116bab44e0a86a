// Charts as plain SVG built with createElementNS: scales, axes, a scatter with a y = x line,
// and stacked bars over time. Colours come from CSS classes (s0..s7), never inline styles.

import { clock, h, svg } from "./dom.js";

export const SERIES_COLOURS = 8;

/** A CSS class per series, stable for a sorted list of names. */
export function seriesClasses(names) {
  const sorted = [...new Set(names)].sort();
  return new Map(sorted.map((name, i) => [name, `s${i % SERIES_COLOURS}`]));
}

/** Round-number ticks covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

function logTicks(lo, hi) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo && v <= hi) ticks.push(v);
    }
  }
  return ticks;
}

/** A scale from [d0, d1] to [r0, r1], linear or logarithmic, with .ticks. */
export function scale(d0, d1, r0, r1, { log = false } = {}) {
  const f = log ? Math.log10 : (v) => v;
  const a = f(d0);
  const span = f(d1) - a || 1;
  const map = (v) => r0 + ((f(Math.max(v, log ? d0 : -Infinity)) - a) / span) * (r1 - r0);
  map.ticks = () => (log ? logTicks(d0, d1) : niceTicks(d0, d1));
  map.domain = [d0, d1];
  return map;
}

/** Tick label: 1200 -> "1.2k", 0.5 -> "0.5". */
export function compact(v) {
  if (Math.abs(v) >= 1000) return `${+(v / 1000).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

function frame(width, height, label) {
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label }, svg("title", null, label));
}

function yAxis(y, x0, x1, label, height) {
  return svg(
    "g",
    { class: "axis y" },
    y.ticks().map((t) => [
      svg("line", { class: "grid", x1: x0, x2: x1, y1: y(t), y2: y(t) }),
      svg("text", { x: x0 - 6, y: y(t) + 4, "text-anchor": "end" }, compact(t)),
    ]),
    svg("text", { class: "label", x: 14, y: height / 2, transform: `rotate(-90 14 ${height / 2})`, "text-anchor": "middle" }, label),
  );
}

function xAxis(x, y0, label, width, format = compact) {
  return svg(
    "g",
    { class: "axis x" },
    svg("line", { class: "baseline", x1: x(x.domain[0]), x2: x(x.domain[1]), y1: y0, y2: y0 }),
    x.ticks().map((t) => svg("text", { x: x(t), y: y0 + 16, "text-anchor": "middle" }, format(t))),
    svg("text", { class: "label", x: width / 2, y: y0 + 34, "text-anchor": "middle" }, label),
  );
}

/** HTML legend: one swatch per series, in the series' colour class. */
export function legend(entries) {
  return h(
    "ul",
    { class: "legend" },
    entries.map(([name, cls, extra]) => h("li", null, h("span", { class: `swatch ${cls}` }), name, extra ? ` ${extra}` : null)),
  );
}

/**
 * Points of several series on shared axes. series: [{name, cls, points: [{x, y, title}]}].
 * diagonal draws y = x (used for predicted vs actual). Log axes when values span > 2 decades.
 */
export function scatter({ series, xLabel, yLabel, label, diagonal = false, width = 640, height = 380 }) {
  const m = { left: 58, right: 16, top: 14, bottom: 46 };
  const values = series.flatMap((s) => s.points.flatMap((p) => [p.x, p.y])).filter((v) => v > 0);
  const hi = Math.max(...values, 1);
  const lo = Math.min(...values, hi);
  const log = lo > 0 && hi / lo > 100;
  const domain = log ? [lo / 1.3, hi * 1.3] : [0, hi * 1.08];
  const x = scale(domain[0], domain[1], m.left, width - m.right, { log });
  const y = scale(domain[0], domain[1], height - m.bottom, m.top, { log });
  const chart = frame(width, height, label);
  chart.append(yAxis(y, m.left, width - m.right, yLabel, height), xAxis(x, height - m.bottom, xLabel, width));
  if (diagonal) {
    const [a, b] = domain;
    chart.append(
      svg("line", { class: "diagonal", x1: x(a), y1: y(a), x2: x(b), y2: y(b) }),
      svg("text", { class: "diagonal-label", x: x(b) - 4, y: y(b) + 14, "text-anchor": "end" }, "y = x: perfect prediction"),
    );
  }
  for (const s of series) {
    chart.append(
      svg(
        "g",
        { class: `series ${s.cls}`, "data-series": s.name },
        s.points.map((p) => svg("circle", { class: "dot", cx: x(p.x), cy: y(p.y), r: 3.5 }, svg("title", null, p.title))),
      ),
    );
  }
  if (log) chart.append(svg("text", { class: "note", x: width - m.right, y: m.top + 10, "text-anchor": "end" }, "log scale"));
  return chart;
}

/**
 * Counts per time bucket, stacked by series. buckets: sorted Date list;
 * series: [{name, cls, values: Map(bucketTime -> count)}].
 */
export function stackedBars({ buckets, series, label, yLabel, bucketName = "minute", width = 720, height = 260 }) {
  const m = { left: 48, right: 12, top: 12, bottom: 40 };
  const totals = buckets.map((b) => series.reduce((sum, s) => sum + (s.values.get(b.getTime()) || 0), 0));
  const y = scale(0, Math.max(...totals, 1) * 1.1, height - m.bottom, m.top);
  y.ticks = () => niceTicks(0, y.domain[1], 4).filter((t) => Number.isInteger(t));
  const band = (width - m.left - m.right) / Math.max(buckets.length, 1);
  const chart = frame(width, height, label);
  chart.append(yAxis(y, m.left, width - m.right, yLabel, height));
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((bucket, i) => {
    const x0 = m.left + i * band + band * 0.12;
    let base = 0;
    for (const s of series) {
      const n = s.values.get(bucket.getTime()) || 0;
      if (!n) continue;
      const tip = `${s.name}: ${n} violation${n === 1 ? "" : "s"} in the ${bucketName} from ${clock(bucket)}`;
      chart.append(
        svg("rect", { class: `bar ${s.cls}`, x: x0, width: band * 0.76, y: y(base + n), height: y(base) - y(base + n) }, svg("title", null, tip)),
      );
      base += n;
    }
    if (i % every === 0) {
      const label = clock(bucket).slice(0, -3); // buckets start on whole minutes: drop ":00"
      chart.append(svg("text", { class: "tick", x: x0 + band * 0.38, y: height - m.bottom + 16, "text-anchor": "middle" }, label));
    }
  });
  chart.append(
    svg("line", { class: "baseline", x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom }),
    svg("text", { class: "label", x: width / 2, y: height - 4, "text-anchor": "middle" }, `time (one bar per ${bucketName}, local)`),
  );
  return chart;
}

export { xAxis, yAxis, frame };
