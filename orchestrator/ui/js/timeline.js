// A job's timeline from its audit trail (GET /api/jobs/{id}/events): a waterfall chart of
// the attempts against the SLA, and one sentence per event.

import { frame, scale, xAxis } from "./charts.js";
import { badge, h, isNum, ms, num, sentence, svg, toDate, when } from "./dom.js";

function detailText(details) {
  return Object.entries(details || {})
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : num(v)}`)
    .join(", ");
}

function attemptSentence(e, d) {
  const head = `Attempt${d.attempt ? ` ${d.attempt}` : ""} on ${e.target || "?"}${d.hedge ? " (hedge)" : ""}`;
  if (e.outcome === "ok") return `${head}: answered in ${ms(e.latency_ms)}.`;
  return `${head}: ${e.outcome || d.error_kind || "failed"} after ${ms(e.latency_ms)}${d.error ? ` (${d.error})` : ""}.`;
}

/** One plain sentence for one audit event. */
export function eventSentence(e) {
  const d = e.details || {};
  switch (e.event) {
    case "submitted":
      return `Submitted by ${e.actor}: ${d.kind || "screening"} job, SLA ${ms(d.sla_ms)}, preferred target ${d.preferred_target || "auto"}.`;
    case "claimed":
      return `Claimed by worker ${e.actor}${d.claim > 1 ? ` (claim ${d.claim})` : ""}.`;
    case "routed": {
      const order = Array.isArray(d.order) && d.order.length ? `; call order ${d.order.join(" → ")}` : "";
      const unmeetable = e.outcome === "sla_unmeetable" ? " (SLA unmeetable)" : "";
      return `${e.target ? `Routed to ${e.target}` : "No target chosen"}${unmeetable}${order}.${d.reason ? ` ${d.reason}` : ""}`;
    }
    case "attempt":
      return attemptSentence(e, d);
    case "failover":
      return `Failed over from ${e.target || "?"}${e.outcome ? ` after ${e.outcome}` : ""}.`;
    case "hedge":
      return `Hedged: a second call went to ${e.target || "?"}${detailText(d) ? ` (${detailText(d)})` : ""}.`;
    case "completed":
      return `Completed on ${e.target || "?"}; the model call took ${ms(e.latency_ms)}.`;
    case "failed":
      return `Failed: ${d.error_kind || e.outcome || "unknown reason"}.`;
    case "recovered":
      return `Recovered by ${e.actor}${detailText(d) ? `: ${detailText(d)}` : ": its lease expired"}.`;
    case "erased":
      return `PHI erased by ${e.actor} (${d.reason === "retention" ? "retention period" : "case erasure"}).`;
    case "exported":
      return `Case exported by ${e.actor}.`;
    case "requeued":
      return `Re-queued by ${e.actor}${detailText(d) ? `: ${detailText(d)}` : ""}.`;
    default: {
      const extra = [e.target && `target ${e.target}`, e.outcome && `outcome ${e.outcome}`, detailText(d)].filter(Boolean);
      return `${e.event}${extra.length ? `: ${extra.join(", ")}` : ""}.`;
    }
  }
}

function offsetMs(e, t0) {
  const at = toDate(e.at);
  return at && t0 ? at.getTime() - t0.getTime() : 0;
}

const SLA_OFF_CHART = 3; // an SLA this many times longer than the job is labelled at the edge, not drawn to scale

/** Terminal events last: they can share a timestamp with the attempt that ended the job. */
export function ordered(events) {
  const last = (e) => (e.event === "completed" || e.event === "failed" ? 1 : 0);
  return [...events].sort((a, b) => (toDate(a.at) || 0) - (toDate(b.at) || 0) || last(a) - last(b));
}

function slaMarker(x, slaMs, top, bottom, edge) {
  if (!isNum(slaMs)) return null;
  if (slaMs > x.domain[1]) {
    return svg("text", { class: "sla-label", x: edge, y: top + 10, "text-anchor": "end" }, `SLA ${ms(slaMs)} →`);
  }
  const nearLeft = x(slaMs) - x(0) < 80;
  return svg(
    "g",
    null,
    svg("line", { class: "sla-line", x1: x(slaMs), x2: x(slaMs), y1: top, y2: bottom }),
    svg("text", { class: "sla-label", x: x(slaMs) + (nearLeft ? 4 : -4), y: top + 10, "text-anchor": nearLeft ? "start" : "end" }, `SLA ${ms(slaMs)}`),
  );
}

/** Waterfall: every event on a job line, one bar per attempt, and the SLA deadline. */
export function timelineChart(events, slaMs) {
  const t0 = toDate(events[0].at);
  const attempts = events.filter((e) => e.event === "attempt");
  const lastMs = Math.max(...events.map((e) => offsetMs(e, t0)), 1);
  const showSla = isNum(slaMs) && slaMs <= lastMs * SLA_OFF_CHART;
  const end = Math.max(lastMs, showSla ? slaMs : 0) * 1.08;
  const width = 640;
  const rowH = 24;
  const m = { left: 110, right: 16, top: 16, bottom: 44 };
  const height = m.top + m.bottom + (attempts.length + 1) * rowH;
  const x = scale(0, end, m.left, width - m.right);
  const chart = frame(width, height, "Timeline of the job: events, attempts and the SLA deadline");
  chart.classList.add("timeline-chart");
  const jobMid = m.top + rowH / 2;
  chart.append(
    svg("text", { class: "row-label", x: m.left - 8, y: jobMid + 4, "text-anchor": "end" }, "job"),
    svg("line", { class: "job-line", x1: x(0), x2: x(lastMs), y1: jobMid, y2: jobMid }),
  );
  for (const e of events) {
    const tip = `+${ms(offsetMs(e, t0))} ${e.event}`;
    chart.append(svg("circle", { class: `mark ev-${e.event}`, cx: x(offsetMs(e, t0)), cy: jobMid, r: 4.5 }, svg("title", null, tip)));
  }
  attempts.forEach((e, i) => {
    const stop = offsetMs(e, t0);
    const start = Math.max(0, stop - (isNum(e.latency_ms) ? e.latency_ms : 0));
    const mid = m.top + (i + 1.5) * rowH;
    const hedge = e.details && e.details.hedge ? " hedge" : "";
    const tip = `${e.target}: ${e.outcome} in ${ms(e.latency_ms)}${hedge ? " (hedge)" : ""}`;
    chart.append(
      svg("text", { class: "row-label", x: m.left - 8, y: mid + 4, "text-anchor": "end" }, `${i + 1}. ${e.target || "?"}`),
      svg(
        "rect",
        { class: `attempt ${e.outcome === "ok" ? "ok" : "err"}${hedge}`, x: x(start), y: mid - 7, width: Math.max(2, x(stop) - x(start)), height: 14 },
        svg("title", null, tip),
      ),
    );
  });
  const marker = slaMarker(x, slaMs, m.top - 12, height - m.bottom, width - m.right);
  if (marker) chart.append(marker);
  chart.append(xAxis(x, height - m.bottom, "milliseconds since submission", width));
  return chart;
}

/** The timeline: chart, then an ordered list of events with their offset from submission. */
export function timelineView(events, slaMs) {
  if (!events || !events.length) return sentence("No events recorded for this job yet.");
  events = ordered(events);
  const t0 = toDate(events[0].at);
  return h(
    "div",
    { class: "timeline" },
    timelineChart(events, slaMs),
    h(
      "ol",
      { class: "events" },
      events.map((e) =>
        h(
          "li",
          { class: `event ev-${e.event}`, "data-event": e.event },
          h("span", { class: "offset" }, `+${ms(offsetMs(e, t0))}`),
          badge(e.event, `ev ev-${e.event}`),
          h("span", { class: "what" }, eventSentence(e)),
          h("span", { class: "at" }, when(e.at)),
        ),
      ),
    ),
  );
}
