// One job in full: facts, result, timeline and routing explanation. Used by the Jobs page
// and by the Submit page once its job is known.

import { api } from "./api.js";
import { decisionView } from "./decision.js";
import { badge, facts, h, isNum, jobLink, ms, sentence, table, usd, when } from "./dom.js";
import { timelineView } from "./timeline.js";

export const TERMINAL = new Set(["completed", "failed"]);

/** Everything the API says about a job: status, its events, and (for tasks) the task type. */
export async function loadJob(id) {
  const path = encodeURIComponent(id);
  const [status, events] = await Promise.all([api(`api/status/${path}`), api(`api/jobs/${path}/events`)]);
  if (status.kind === "task" && status.task_type === undefined) {
    try {
      status.task_type = (await api(`task/${path}`)).task_type;
    } catch {
      status.task_type = null; // an API without /task: the job is still worth showing
    }
  }
  return { status, events };
}

function slaMet(value) {
  if (value === null || value === undefined) return "—";
  return h("span", { class: value ? "yes" : "no" }, value ? "met" : "missed");
}

// "insufficient_information": the model recognised nothing it could assess. A valid answer, not
// low risk: the console says so in words and shows it in the neutral badge colour.
const INSUFFICIENT = "insufficient_information";

function riskLine(level) {
  if (level === INSUFFICIENT) {
    return h(
      "p",
      { class: "risk" },
      "Risk level ",
      badge("insufficient information", "risk risk-insufficient"),
      " — not assessed: the observations name no milestone the model recognises. Describe what the child does and does not do yet, and submit again.",
    );
  }
  return h("p", { class: "risk" }, "Risk level ", badge(level || "unknown", `risk risk-${level}`));
}

function screeningResult(result) {
  const domains = result.flagged_domains || [];
  const milestones = result.milestones_flagged || [];
  return h(
    "div",
    { class: "result screening" },
    riskLine(result.risk_level),
    h(
      "p",
      { class: "domains" },
      "Flagged domains: ",
      domains.length ? domains.map((d) => badge(d, "chip")) : "none",
    ),
    h("p", { class: "rationale" }, result.rationale || ""),
    milestones.length
      ? table(
          ["Domain", "Milestone", "Expected by"],
          milestones.map((m) => h("tr", null, h("td", null, m.domain), h("td", null, m.milestone), h("td", { class: "num" }, `${m.expected_by_months} months`))),
        )
      : null,
    h("p", { class: "fine" }, [result.model_version && `Model ${result.model_version}.`, result.disclaimer].filter(Boolean).join(" ")),
  );
}

export function resultView(status) {
  if (status.erased) {
    const why = status.error_kind === "erased" ? "Its case was erased before it finished." : "Its observations and result were erased (case erasure or retention).";
    return h("div", { class: "result erased" }, h("p", null, badge("erased", "muted"), " ", why));
  }
  if (status.status === "failed") {
    return h("div", { class: "result failed" }, h("p", null, badge(status.error_kind || "failed", "bad"), " ", status.error || "The job failed."));
  }
  if (status.result === null || status.result === undefined) {
    return sentence(TERMINAL.has(status.status) ? "This job finished without a result." : "No result yet: the job has not finished.");
  }
  if (typeof status.result === "object" && "risk_level" in status.result) return screeningResult(status.result);
  return h("pre", { class: "result json" }, JSON.stringify(status.result, null, 2));
}

function summary(status) {
  const attempts = status.attempts || [];
  return facts([
    ["Kind", status.kind],
    ["Task type", status.kind === "task" ? status.task_type ?? "—" : undefined],
    ["Target", status.target ?? "—"],
    ["Preferred", status.preferred_target],
    ["SLA", [ms(status.sla_ms), " ", slaMet(status.sla_met)]],
    ["Submitted", when(status.created_at)],
    ["Started", when(status.started_at)],
    ["Finished", when(status.finished_at)],
    ["Model call", ms(status.latency_ms)],
    ["Submit → finish", ms(status.total_ms)],
    ["Cost", usd(status.cost_usd)],
    ["Attempts", String(attempts.length)],
    ["Case", status.case_id ? h("span", { class: "mono", title: status.case_id }, String(status.case_id).slice(0, 8)) : "—"],
  ]);
}

/** The detail of one job: {status, events} as loadJob returns them. */
export function jobView({ status, events }) {
  const running = !TERMINAL.has(status.status);
  return h(
    "article",
    { class: "job", "data-job-id": status.job_id, "data-status": status.status },
    h("h2", null, "Job ", jobLink(status.job_id, status.job_id), " ", badge(status.status, `status ${status.status}`)),
    running ? h("p", { class: "note live-note" }, `This job is ${status.status}; this view follows it until it finishes.`) : null,
    summary(status),
    h("section", { class: "part" }, h("h3", null, "Result"), resultView(status)),
    h("section", { class: "part" }, h("h3", null, "Timeline"), timelineView(events, isNum(status.sla_ms) ? status.sla_ms : null)),
    h("section", { class: "part" }, h("h3", null, "Routing explanation"), decisionView(status.routing)),
  );
}
