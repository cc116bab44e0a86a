// Targets: every model server with its tier, URL, cost, live latency, errors, load, circuit
// and last telemetry. Refreshes every 3 s while the tab is visible. A registered target can be
// removed (DELETE /api/targets/{name}, admin keys only), after a confirmation.

import { api, asSentence, describe } from "../api.js";
import { ago, badge, clock, fill, h, isNum, ms, pct, sentence, table, usd, when } from "../dom.js";
import { live } from "../live.js";

const REFRESH_MS = 3000;

function latency(value, stats) {
  if (!isNum(value)) return "—";
  // samples == 0: the router knows nothing measured yet, so this is the configured prior.
  return stats && stats.samples === 0 ? h("span", { class: "prior", title: "prior: nothing measured yet" }, `${ms(value)} (prior)`) : ms(value);
}

function circuit(c) {
  if (!c) return "—";
  const state = c.state || "closed";
  return h(
    "span",
    null,
    badge(state.replace("_", "-"), `circuit-${state}`),
    c.until && state !== "closed" ? h("span", { class: "sub" }, ` until ${clock(c.until)}`) : null,
    c.open_count ? h("span", { class: "sub" }, ` (opened ${c.open_count}×)`) : null,
  );
}

function telemetry(t) {
  if (!t) return h("span", { class: "muted" }, "none received");
  const parts = [
    isNum(t.latency_ms) ? ms(t.latency_ms) : null,
    isNum(t.utilization) ? `${pct(t.utilization, 0)} busy` : null,
    isNum(t.queue_depth) ? `queue ${t.queue_depth}` : null,
    t.up === false ? "reported down" : null,
  ].filter(Boolean);
  return h("span", { title: t.at || "" }, `${parts.join(", ") || "sample"} · ${ago(t.at)}`);
}

function removeButton(t, removed) {
  if (t.source !== "registered") return null;
  const button = h("button", { type: "button", class: "secondary remove", "data-remove": t.name }, "Remove");
  button.addEventListener("click", async () => {
    const question = `Remove the registered target “${t.name}” (${t.url})? Workers stop routing to it within seconds; a configured target of the same name is used again.`;
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      const result = await api(`api/targets/${encodeURIComponent(t.name)}`, { method: "DELETE" });
      removed(result.restored ? `Removed “${t.name}”; the configured target of that name (${result.restored.url}) is in use again.` : `Removed “${t.name}”.`);
    } catch (err) {
      button.disabled = false;
      removed(asSentence(describe(err)), true);
    }
  });
  return button;
}

function row(t, removed) {
  const s = t.stats || {};
  return h(
    "tr",
    { class: t.enabled === false ? "muted" : "", "data-target": t.name },
    h("td", null, h("strong", null, t.name), t.enabled === false ? h("span", { class: "sub" }, " (disabled)") : null),
    h("td", null, badge(t.tier, `tier tier-${t.tier}`)),
    h("td", { class: "url" }, h("code", null, t.url), h("span", { class: "sub" }, ` ${t.contract || ""}`)),
    h("td", { class: "num" }, usd(t.cost_per_call_usd)),
    h("td", { class: "num" }, latency(s.latency_p50_ms, s)),
    h("td", { class: "num" }, latency(s.latency_p95_ms, s)),
    h("td", { class: "num" }, pct(s.error_rate), isNum(s.calls) ? h("span", { class: "sub" }, ` of ${s.calls}`) : null),
    h("td", { class: "num" }, `${s.in_flight ?? 0} / ${t.capacity ?? "?"}`),
    h("td", null, circuit(t.circuit)),
    h("td", null, telemetry(t.telemetry)),
    h("td", { class: "source" }, t.source || "—", " ", removeButton(t, removed)),
  );
}

function render(body, data, removed) {
  const targets = (data && data.targets) || [];
  if (!targets.length) {
    fill(
      body,
      sentence(
        "No model servers are configured — set EDGE_MODEL_URL, CLOUD_MODEL_URL or GPU_MODEL_URL, or register one with POST /register_agent.",
      ),
    );
    return;
  }
  const headers = ["Target", "Tier", "URL", "Cost/call", "p50", "p95", "Error rate", "In flight", "Circuit", "Last telemetry", "Source"];
  fill(
    body,
    h("div", { class: "scroll" }, table(headers, targets.map((t) => row(t, removed)), "data targets")),
    h("p", { class: "note" }, `Updated at `, when(new Date()), ` · refreshes every ${REFRESH_MS / 1000} s while this tab is visible. `,
      "p50/p95 are the router's prediction for one more call now; (prior) means nothing has been measured yet."),
  );
}

export default {
  name: "targets",
  title: "Targets",
  mount(root) {
    const region = h("div");
    const notice = h("p", { class: "note removal", role: "status", hidden: true });
    let handle = null;
    const removed = (message, failed = false) => {
      notice.textContent = message;
      notice.className = failed ? "problem removal" : "accepted removal";
      notice.hidden = false;
      if (!failed && handle) handle.refresh();
    };
    fill(root, h("h1", null, "Targets"), h("p", { class: "lede" }, "The model servers the workers route to, as the router sees them right now."), notice, region);
    handle = live(region, { load: () => api("api/targets"), render: (body, data) => render(body, data, removed), interval: REFRESH_MS });
    return handle;
  },
};
