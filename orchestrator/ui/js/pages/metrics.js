// Model metrics: how well the router predicts latency, per target. A scatter of predicted
// against measured latency with the y = x line, and per target MAE, bias and p95 calibration.

import { api } from "../api.js";
import { legend, scatter, seriesClasses } from "../charts.js";
import { clock, fill, h, isNum, ms, pct, sentence, signedMs, table, usd } from "../dom.js";
import { field, select } from "../forms.js";
import { live } from "../live.js";

const REFRESH_MS = 15000;
const POINTS = 300; // points per target asked of the API (it allows up to 500)
const P95_IDEAL = 0.95;
const P95_TOLERANCE = 0.05; // within 0.90..1.00 reads as calibrated
const WINDOWS = [["1", "last hour"], ["6", "last 6 hours"], ["24", "last 24 hours"], ["168", "last 7 days"]];

/** What bias and calibration mean, in words. */
function verdict(t) {
  const words = [];
  if (isNum(t.bias_ms)) {
    words.push(Math.abs(t.bias_ms) < 1 ? "unbiased" : `${t.bias_ms > 0 ? "overestimates" : "underestimates"} latency by ${ms(Math.abs(t.bias_ms))} on average`);
  }
  if (isNum(t.p95_calibration)) {
    if (t.p95_calibration < P95_IDEAL - P95_TOLERANCE) words.push("p95 too optimistic");
    else if (t.p95_calibration >= 0.995 && t.jobs >= 20) words.push("p95 conservative");
    else words.push("p95 well calibrated");
  }
  return words.join("; ");
}

function statsRow(t, cls) {
  return h(
    "tr",
    { "data-target": t.target },
    h("td", null, h("span", { class: `swatch ${cls}` }), " ", h("strong", null, t.target)),
    h("td", { class: "num" }, t.jobs ?? "—"),
    h("td", { class: "num" }, ms(t.mae_ms)),
    h("td", { class: "num" }, signedMs(t.bias_ms)),
    h("td", { class: "num" }, pct(t.p95_calibration)),
    h("td", { class: "num" }, usd(t.cost_per_job_usd)),
    h("td", null, verdict(t)),
  );
}

function render(body, data) {
  const targets = (data.targets || []).filter((t) => (t.jobs || 0) > 0 || (t.points || []).length);
  if (!targets.length) {
    fill(body, sentence("No jobs with both a predicted and a measured latency in this window yet — completed jobs appear here."));
    return;
  }
  const classes = seriesClasses(targets.map((t) => t.target));
  const series = targets.map((t) => ({
    name: t.target,
    cls: classes.get(t.target),
    points: (t.points || [])
      .filter((p) => isNum(p.predicted_ms) && isNum(p.actual_ms))
      .map((p) => ({ x: p.predicted_ms, y: p.actual_ms, title: `${t.target} at ${clock(p.at)}: predicted ${ms(p.predicted_ms)}, actual ${ms(p.actual_ms)}` })),
  }));
  fill(
    body,
    h(
      "figure",
      { class: "chart-box" },
      scatter({ series, diagonal: true, xLabel: "predicted p50 (ms)", yLabel: "actual (ms)", label: "Predicted against actual latency per target" }),
      h("figcaption", null, legend(series.map((s) => [s.name, s.cls, `(${s.points.length} point${s.points.length === 1 ? "" : "s"})`])),
        h("p", { class: "note" }, "Points above the line took longer than predicted; below it, less.")),
    ),
    h("div", { class: "scroll" }, table(["Target", "Jobs", "MAE", "Bias", "Within p95", "Cost/job", "Reading"], targets.map((t) => statsRow(t, classes.get(t.target))), "data model-metrics")),
    h("p", { class: "note" }, `MAE: mean absolute error of the predicted p50. Bias: mean of predicted − actual. Within p95: share of calls that finished within the predicted p95 (ideal ≈ ${pct(P95_IDEAL, 0)}).`),
  );
}

export default {
  name: "metrics",
  title: "Model metrics",
  mount(root) {
    const form = h("form", { class: "form filters", novalidate: true, "aria-label": "Model metrics window" }, field("Window", select("hours", WINDOWS, "24")));
    const region = h("div");
    fill(root, h("h1", null, "Model metrics"), h("p", { class: "lede" }, "How well the router's latency predictions match what each target delivered."), form, region);
    const load = () => {
      const since = new Date(Date.now() - Number(form.elements.hours.value) * 3600000).toISOString();
      return api("api/model-metrics", { query: { since, points: POINTS } });
    };
    const feed = live(region, { load, render, interval: REFRESH_MS });
    form.addEventListener("change", () => feed.refresh());
    form.addEventListener("submit", (event) => event.preventDefault());
    return feed;
  },
};
