// The routing explanation: which target was chosen and why, every candidate's score
// components, and a chart of predicted latency against the time left to the deadline.

import { frame, scale, xAxis } from "./charts.js";
import { badge, h, isNum, ms, pct, sentence, svg, table, usd, when } from "./dom.js";

function yesNo(value) {
  if (value === null || value === undefined) return "—";
  return h("span", { class: value ? "yes" : "no" }, value ? "yes" : "no");
}

function byRank(candidates) {
  return [...(candidates || [])].sort((a, b) => (a.rank ?? 99) - (b.rank ?? 99));
}

/** True when the candidate's predicted p95 passes the deadline: shown even when the candidate
 * is eligible and meets the SLA (its on-time chance, not its p95, is the rule). */
export function p95PastDeadline(c) {
  return isNum(c.predicted_p95_ms) && isNum(c.time_left_ms) && c.predicted_p95_ms > c.time_left_ms;
}

const LATE = "#b42318";

/** Horizontal bars: predicted p50 (bar) to p95 (whisker) per candidate, and the time left. */
export function latencyChart(candidates) {
  const rows = byRank(candidates);
  const width = 640;
  const rowH = 30;
  const m = { left: 150, right: 20, top: 10, bottom: 44 };
  const height = m.top + m.bottom + rows.length * rowH;
  const hi = Math.max(...rows.flatMap((c) => [c.predicted_p95_ms, c.time_left_ms].filter(isNum)), 1) * 1.1;
  const x = scale(0, hi, m.left, width - m.right);
  const chart = frame(width, height, "Predicted latency (p50 to p95) of each candidate against the time left");
  chart.classList.add("latency-chart");
  rows.forEach((c, i) => {
    const top = m.top + i * rowH;
    const mid = top + rowH / 2;
    const late = p95PastDeadline(c);
    const cls = `cand${c.eligible ? "" : " ineligible"}${c.meets_sla ? " meets" : " misses"}${late ? " p95-late" : ""}`;
    const tip =
      `${c.target}: p50 ${ms(c.predicted_p50_ms)}, p95 ${ms(c.predicted_p95_ms)}, time left ${ms(c.time_left_ms)}` +
      (late ? " (p95 passes the deadline)" : "");
    const group = svg("g", { class: cls, "data-target": c.target, "data-p95-late": String(late) }, svg("title", null, tip));
    group.append(svg("text", { class: "row-label", x: m.left - 8, y: mid + 4, "text-anchor": "end" }, `${c.rank ?? i + 1}. ${c.target}`));
    if (isNum(c.predicted_p50_ms)) {
      group.append(svg("rect", { class: "p50", x: m.left, y: mid - 7, width: Math.max(1, x(c.predicted_p50_ms) - m.left), height: 14 }));
    }
    if (isNum(c.predicted_p50_ms) && isNum(c.predicted_p95_ms)) {
      // A late whisker gets its own class and presentation attributes (the CSP allows no inline style).
      const line = late ? { class: "whisker-late", stroke: LATE, "stroke-width": 2.5 } : { class: "whisker" };
      group.append(
        svg("line", { ...line, x1: x(c.predicted_p50_ms), x2: x(c.predicted_p95_ms), y1: mid, y2: mid }),
        svg("line", { ...line, x1: x(c.predicted_p95_ms), x2: x(c.predicted_p95_ms), y1: mid - 6, y2: mid + 6 }),
      );
      if (late) {
        const at = Math.min(x(c.predicted_p95_ms) + 4, width - m.right - 90);
        group.append(svg("text", { class: "p95-late-label", x: at, y: top + 9, fill: LATE, "font-size": 10 }, "p95 past deadline"));
      }
    }
    if (isNum(c.time_left_ms) && c.time_left_ms > 0) {
      group.append(svg("line", { class: "time-left", x1: x(c.time_left_ms), x2: x(c.time_left_ms), y1: top + 2, y2: top + rowH - 2 }));
    }
    chart.append(group);
  });
  chart.append(xAxis(x, height - m.bottom, "milliseconds: bar = predicted p50, whisker = p95, red tick = time left", width));
  return chart;
}

const HEADERS = ["#", "Target", "Tier", "Eligible", "Meets SLA", "On time", "Needed", "In budget", "p50", "p95", "Cost", "Errors", "Circuit", "In flight"];

/** Two rows per candidate: its score components, then its reason across the whole table. */
function candidateRows(c) {
  const muted = c.eligible ? "" : " muted";
  return [
    h(
      "tr",
      { class: `cand-row${muted}`, "data-target": c.target },
      h("td", { class: "num" }, c.rank ?? "—"),
      h("td", null, h("strong", null, c.target)),
      h("td", null, c.tier),
      h("td", null, yesNo(c.eligible)),
      h("td", null, yesNo(c.meets_sla)),
      h("td", { class: "num" }, isNum(c.p_on_time) ? pct(c.p_on_time) : "—"),
      h("td", { class: "num" }, isNum(c.on_time_needed) && c.on_time_needed > 0 ? pct(c.on_time_needed) : "—"),
      h("td", null, yesNo(c.within_budget)),
      h("td", { class: "num" }, ms(c.predicted_p50_ms)),
      h(
        "td",
        { class: "num", "data-p95-late": String(p95PastDeadline(c)) },
        ms(c.predicted_p95_ms),
        p95PastDeadline(c) ? [" ", badge("past deadline", "warn")] : null,
      ),
      h("td", { class: "num" }, usd(c.cost_usd)),
      h("td", { class: "num" }, pct(c.error_rate)),
      h("td", null, badge(c.circuit || "—", `circuit-${c.circuit}`)),
      h("td", { class: "num" }, c.in_flight ?? "—"),
    ),
    h(
      "tr",
      { class: `reason-row${muted}`, "data-reason-for": c.target },
      h("td", null),
      h("td", { class: "reason", colspan: HEADERS.length - 1 }, c.probe ? [badge("probe", "warn"), " "] : null, c.reason),
    ),
  ];
}

/** The whole explanation of one Decision.to_dict(). */
export function decisionView(decision) {
  if (!decision) return sentence("No routing decision yet: a worker has not picked this job up.");
  const candidates = byRank(decision.candidates);
  const headline = decision.chosen
    ? h("p", { class: "headline" }, "Chosen: ", h("strong", { class: "chosen" }, decision.chosen), ". ", decision.reason)
    : h("p", { class: "headline" }, "No target was chosen. ", decision.reason);
  const flags = h(
    "p",
    { class: "flags" },
    decision.sla_unmeetable ? badge("SLA unmeetable", "warn") : badge("SLA meetable", "ok"),
    " ",
    decision.run === false ? badge("fails fast: strict SLA or nothing eligible", "bad") : null,
    " decided ",
    when(decision.decided_at_iso ?? decision.decided_at),
    isNum(candidates[0]?.time_left_ms) ? ` with ${ms(candidates[0].time_left_ms)} left to the deadline` : null,
  );
  if (!candidates.length) return h("div", { class: "decision" }, headline, flags, sentence("No target was considered."));
  return h(
    "div",
    { class: "decision" },
    headline,
    flags,
    latencyChart(candidates),
    h("div", { class: "scroll" }, table(HEADERS, candidates.map(candidateRows), "data candidates")),
  );
}
