// Submit: the screening form. POST /api/submit answers with a job id; the page then follows
// the job (GET /api/status) until it completes or fails, and shows its result and routing.
// Observations travel only in the POST body.

import { api } from "../api.js";
import { fill, h, jobLink } from "../dom.js";
import { checkbox, clearErrors, field, formError, input, numberValue, select, showErrors, textValue } from "../forms.js";
import { jobView, loadJob, TERMINAL } from "../job.js";
import { live } from "../live.js";

const OBSERVATIONS_MAX_CHARS = 4000; // the API's limit (orchestrator.constants)
const FOLLOW_MS = 700; // how often a submitted job is polled until it finishes

/** A random Idempotency-Key, so a double click or a retried POST cannot create two jobs. */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function observationsField() {
  const area = h("textarea", { name: "observations", rows: 7, spellcheck: "true" });
  const count = h("span", { class: "count", "aria-live": "polite" }, `0 / ${OBSERVATIONS_MAX_CHARS}`);
  area.addEventListener("input", () => {
    const n = area.value.length;
    count.textContent = `${n} / ${OBSERVATIONS_MAX_CHARS}`;
    count.classList.toggle("over", n > OBSERVATIONS_MAX_CHARS);
  });
  const wrapper = field("Observations", area, "What the parent or clinician saw, in free text. Sent only in the request body.");
  wrapper.querySelector("label").append(" ", count);
  return wrapper;
}

function buildForm() {
  return h(
    "form",
    { class: "form grid", novalidate: true, "aria-label": "Screening case" },
    field("Age (months)", input("age_months", { type: "number", min: 0, max: 216, inputmode: "numeric" })),
    field("Preferred target", select("preferred_target", [["auto", "auto (let the router choose)"], ["edge", "edge"], ["cloud", "cloud"], ["gpu", "gpu"]], "auto")),
    field("SLA (ms)", input("sla_ms", { type: "number", min: 1, inputmode: "numeric", placeholder: "server default" })),
    field("Budget (USD per job)", input("budget_usd", { type: "number", min: 0, step: "any", inputmode: "decimal", placeholder: "none" })),
    observationsField(),
    field("Embedding (base64, optional)", h("textarea", { name: "embedding_b64", rows: 2, spellcheck: "false", class: "mono" }),
      "Little-endian float32 values, base64-encoded; at most 4096 values."),
    h("div", { class: "field field-strict_sla" }, checkbox("strict_sla", "Strict SLA: fail fast when no target can meet it"),
      h("p", { class: "field-error", "data-error-for": "strict_sla", hidden: true })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Submit for screening")),
    formError(),
  );
}

function bodyOf(form) {
  return {
    age_months: numberValue(form, "age_months"),
    observations: form.elements.observations.value,
    embedding_b64: textValue(form, "embedding_b64")?.trim(),
    preferred_target: form.elements.preferred_target.value,
    sla_ms: numberValue(form, "sla_ms"),
    budget_usd: numberValue(form, "budget_usd"),
    strict_sla: form.elements.strict_sla.checked,
  };
}

export default {
  name: "submit",
  title: "Submit",
  mount(root) {
    const form = buildForm();
    const out = h("section", { class: "follow", "aria-live": "polite" });
    fill(
      root,
      h("h1", null, "Submit a screening case"),
      h("p", { class: "lede" }, "The case is stored, queued and routed like any other; this page follows it until it finishes."),
      form,
      out,
    );
    let follower = null;
    let stopped = false;

    function follow(accepted) {
      const region = h("div");
      fill(out, h("p", { class: "accepted", role: "status" }, "Accepted as job ", jobLink(accepted.job_id, accepted.job_id), "."), region);
      follower = live(region, {
        load: () => loadJob(accepted.job_id),
        render: (body, job) => fill(body, jobView(job)),
        interval: FOLLOW_MS,
        until: (job) => TERMINAL.has(job.status.status),
      });
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      follower?.stop();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const accepted = await api("api/submit", { method: "POST", body: bodyOf(form), headers: { "Idempotency-Key": idempotencyKey() } });
        if (!stopped) follow(accepted);
      } catch (err) {
        if (!stopped) showErrors(form, err);
      } finally {
        button.disabled = false;
      }
    });
    return {
      stop() {
        stopped = true;
        follower?.stop();
      },
    };
  },
};
