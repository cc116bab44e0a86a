// Route tester: a hypothetical job goes to POST /api/route (a dry run) and the decision comes
// back with every candidate's score components and reason. Nothing is stored or queued.

import { api } from "../api.js";
import { decisionView } from "../decision.js";
import { fill, h } from "../dom.js";
import { checkbox, clearErrors, field, formError, input, numberValue, select, showErrors } from "../forms.js";

const TIER_NAMES = ["edge", "cloud", "gpu"];

/** "auto", the tiers, and every target the API knows (when /api/targets answers). */
async function targetOptions() {
  let names = [];
  try {
    names = ((await api("api/targets")).targets || []).map((t) => t.name);
  } catch {
    names = []; // the tester still works with the tier names
  }
  const all = [...new Set([...TIER_NAMES, ...names])];
  return [["auto", "auto (let the router choose)"], ...all.map((n) => [n, n])];
}

function buildForm() {
  return h(
    "form",
    { class: "form grid", novalidate: true, "aria-label": "Hypothetical job" },
    field("Age (months)", input("age_months", { type: "number", min: 0, max: 216, inputmode: "numeric" }), "Optional; informational only."),
    field("SLA (ms)", input("sla_ms", { type: "number", min: 1, value: 2000, inputmode: "numeric" })),
    field("Preferred target", select("preferred_target", [["auto", "auto (let the router choose)"]], "auto")),
    field("Budget (USD per job)", input("budget_usd", { type: "number", min: 0, step: "any", inputmode: "decimal" }), "Optional."),
    field("Kind", select("kind", [["screening", "screening case"], ["task", "generic task (runner targets only)"]], "screening")),
    h("div", { class: "field field-strict_sla" }, checkbox("strict_sla", "Strict SLA: fail fast when no target can meet it"),
      h("p", { class: "field-error", "data-error-for": "strict_sla", hidden: true })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Ask the router")),
    formError(),
  );
}

function bodyOf(form) {
  return {
    sla_ms: numberValue(form, "sla_ms"),
    preferred_target: form.elements.preferred_target.value,
    strict_sla: form.elements.strict_sla.checked,
    budget_usd: numberValue(form, "budget_usd") ?? null,
    age_months: numberValue(form, "age_months"),
    kind: form.elements.kind.value,
  };
}

function answer(out, data) {
  fill(
    out,
    h("p", { class: "dry-run", role: "status" },
      `Dry run: nothing was queued or stored. The router considered ${data.targets_considered ?? data.decision?.candidates?.length ?? 0} target(s).`),
    decisionView(data.decision),
  );
}

export default {
  name: "route",
  title: "Route tester",
  mount(root) {
    const form = buildForm();
    const out = h("section", { class: "route-answer", "aria-live": "polite" });
    fill(
      root,
      h("h1", null, "Route tester"),
      h("p", { class: "lede" }, "Describe a hypothetical job and see how the router would rank the targets right now. Nothing is queued."),
      form,
      out,
    );
    let stopped = false;
    targetOptions().then((options) => {
      if (stopped) return;
      const choice = form.elements.preferred_target;
      fill(choice, options.map(([value, label]) => h("option", { value }, label)));
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const data = await api("api/route", { method: "POST", body: bodyOf(form) });
        if (!stopped) answer(out, data);
      } catch (err) {
        if (!stopped) showErrors(form, err);
      } finally {
        button.disabled = false;
      }
    });
    return {
      stop() {
        stopped = true;
      },
    };
  },
};
