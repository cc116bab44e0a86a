// SLA events: jobs that finished later than their SLA, with the margin, target and time, and
// the count of violations per target over time as a stacked bar chart.

import { api } from "../api.js";
import { legend, seriesClasses, stackedBars } from "../charts.js";
import { fill, h, jobLink, ms, sentence, signedMs, table, toDate, when } from "../dom.js";
import { field, select } from "../forms.js";
import { live } from "../live.js";

const REFRESH_MS = 10000;
const LIMIT = 200; // the API's largest page
const MAX_FILLED_BUCKETS = 90; // beyond this, empty buckets are left out instead of drawn
const MIN_BUCKETS = 15; // a chart shows at least this many buckets, so one bar still has a time scale
const WINDOWS = [["1", "last hour"], ["6", "last 6 hours"], ["24", "last 24 hours"], ["168", "last 7 days"]];
const BUCKET_MS = { minute: 60000, hour: 3600000 };

function windowLabel(hours) {
  return (WINDOWS.find(([value]) => value === hours) || WINDOWS[2])[1];
}

/**
 * Bucket start times, oldest first: every bucket from the first violation (or MIN_BUCKETS back)
 * to the current one when that is few enough to draw, else only the buckets that have counts.
 */
function bucketTimes(counts, bucket) {
  const step = BUCKET_MS[bucket] || BUCKET_MS.minute;
  const present = [...new Set(counts.map((c) => toDate(c.bucket_start)?.getTime()).filter(Boolean))].sort((a, b) => a - b);
  if (!present.length) return [];
  const last = Math.max(present[present.length - 1], Math.floor(Date.now() / step) * step);
  const first = Math.min(present[0], last - (MIN_BUCKETS - 1) * step);
  const span = Math.round((last - first) / step);
  if (span > MAX_FILLED_BUCKETS) return present.map((t) => new Date(t));
  const grid = new Set(Array.from({ length: span + 1 }, (_, i) => first + i * step));
  for (const t of present) grid.add(t); // a bucket off the grid still gets its bar
  return [...grid].sort((a, b) => a - b).map((t) => new Date(t));
}

const NO_TARGET = "(no target)"; // a job that failed before any target was chosen

function chart(counts, bucket) {
  counts = counts.map((c) => ({ ...c, target: c.target ?? NO_TARGET }));
  const classes = seriesClasses(counts.map((c) => c.target));
  const series = [...classes].map(([name, cls]) => ({ name, cls, values: new Map() }));
  for (const c of counts) {
    const s = series.find((x) => x.name === c.target);
    const t = toDate(c.bucket_start)?.getTime();
    if (s && t) s.values.set(t, (s.values.get(t) || 0) + c.violations);
  }
  const totals = series.map((s) => [s.name, s.cls, `(${[...s.values.values()].reduce((a, b) => a + b, 0)})`]);
  return h(
    "figure",
    { class: "chart-box" },
    stackedBars({ buckets: bucketTimes(counts, bucket), series, bucketName: bucket, label: "SLA violations per target over time", yLabel: "violations" }),
    h("figcaption", null, legend(totals)),
  );
}

function eventRow(e) {
  return h(
    "tr",
    { "data-target": e.target },
    h("td", null, when(e.finished_at)),
    h("td", null, jobLink(e.job_id)),
    h("td", null, e.kind),
    h("td", null, e.target ?? "—"),
    h("td", { class: "num" }, ms(e.sla_ms)),
    h("td", { class: "num" }, ms(e.total_ms)),
    h("td", { class: "num over" }, signedMs(e.margin_ms)),
  );
}

export default {
  name: "sla",
  title: "SLA events",
  mount(root) {
    const form = h(
      "form",
      { class: "form filters", novalidate: true, "aria-label": "SLA events window" },
      field("Window", select("hours", WINDOWS, "24")),
      field("Target", select("target", [["", "any"]], "")),
      field("Bucket", select("bucket", [["minute", "per minute"], ["hour", "per hour"]], "minute")),
    );
    const region = h("div");
    fill(root, h("h1", null, "SLA events"), h("p", { class: "lede" }, "Jobs that finished later than their SLA, newest first."), form, region);
    api("api/targets")
      .then((data) => form.elements.target.append(...(data.targets || []).map((t) => h("option", { value: t.name }, t.name))))
      .catch(() => {}); // the filter is optional

    const load = () => {
      const since = new Date(Date.now() - Number(form.elements.hours.value) * 3600000).toISOString();
      return api("api/sla-events", { query: { limit: LIMIT, since, target: form.elements.target.value, bucket: form.elements.bucket.value } });
    };
    const render = (body, data) => {
      const items = data.items || [];
      const counts = data.counts || [];
      const period = windowLabel(form.elements.hours.value);
      if (!items.length && !counts.length) {
        fill(body, sentence(`No SLA violations in the ${period}${form.elements.target.value ? ` on ${form.elements.target.value}` : ""}.`));
        return;
      }
      const total = counts.reduce((sum, c) => sum + c.violations, 0);
      fill(
        body,
        h("p", { class: "summary" }, `${total || items.length} violation${(total || items.length) === 1 ? "" : "s"} in the ${period}.`),
        counts.length ? chart(counts, form.elements.bucket.value) : null,
        items.length
          ? h("div", { class: "scroll" }, table(["Finished", "Job", "Kind", "Target", "SLA", "Took", "Over by"], items.map(eventRow), "data sla-events"))
          : null,
        items.length >= LIMIT ? h("p", { class: "note" }, `Showing the newest ${LIMIT}.`) : null,
      );
    };
    const feed = live(region, { load, render, interval: REFRESH_MS });
    form.addEventListener("change", () => feed.refresh());
    form.addEventListener("submit", (event) => event.preventDefault());
    return feed;
  },
};
