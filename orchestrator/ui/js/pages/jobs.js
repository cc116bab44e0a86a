// Jobs: a list filterable by status, target, kind and time, paged with the API's cursors; the
// job picked (#/jobs/<id>) opens beside it with its timeline, result and routing explanation.
// Filters live in the URL fragment (they are not PHI); so do job ids.

import { api } from "../api.js";
import { badge, fill, h, jobLink, ms, sentence, table, when } from "../dom.js";
import { field, input, select } from "../forms.js";
import { jobView, loadJob, TERMINAL } from "../job.js";
import { live } from "../live.js";

const PAGE_SIZE = 25;
const LIST_REFRESH_MS = 5000; // the first page refreshes itself; older pages hold still
const DETAIL_REFRESH_MS = 1500; // an unfinished job is followed until it finishes
const FILTERS = ["status", "target", "kind", "since", "until"];

function filtersOf(query) {
  return Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || ""]));
}

/** A datetime-local value ("2026-05-01T14:03", local time) as ISO-8601 UTC. */
function isoFromLocal(value) {
  const date = value ? new Date(value) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toISOString() : undefined;
}

function hashFor(id, filters) {
  const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
  const q = query.toString();
  return `#/jobs${id ? `/${encodeURIComponent(id)}` : ""}${q ? `?${q}` : ""}`;
}

function filterForm(filters, onApply) {
  const form = h(
    "form",
    { class: "form filters", novalidate: true, "aria-label": "Filter jobs" },
    field("Status", select("status", [["", "any"], ["queued", "queued"], ["running", "running"], ["completed", "completed"], ["failed", "failed"]], filters.status)),
    field("Target", input("target", { value: filters.target, list: "known-targets", placeholder: "any", autocomplete: "off" })),
    field("Kind", select("kind", [["", "any"], ["screening", "screening"], ["task", "task"]], filters.kind)),
    field("Since", input("since", { type: "datetime-local", value: filters.since })),
    field("Until", input("until", { type: "datetime-local", value: filters.until })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Filter"), h("button", { type: "reset", class: "secondary" }, "Clear")),
    h("datalist", { id: "known-targets" }),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onApply(Object.fromEntries(FILTERS.map((name) => [name, form.elements[name].value.trim()])));
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    onApply(Object.fromEntries(FILTERS.map((name) => [name, ""])));
  });
  api("api/targets")
    .then((data) => fill(form.querySelector("datalist"), (data.targets || []).map((t) => h("option", { value: t.name }))))
    .catch(() => {}); // suggestions only; typing a name still works
  return form;
}

function emptySentence(filters, firstPage) {
  const used = FILTERS.filter((name) => filters[name]);
  if (!used.length && firstPage) return h("p", { class: "empty" }, "No jobs yet — ", h("a", { href: "#/submit" }, "submit one"), ".");
  if (!used.length) return sentence("No more jobs.");
  return sentence(`No jobs match these filters (${used.map((name) => `${name} “${filters[name]}”`).join(", ")}).`);
}

function jobRow(job, selectedId, filters) {
  const row = h(
    "tr",
    { class: `job-row${job.job_id === selectedId ? " selected" : ""}`, "data-job-id": job.job_id, "data-status": job.status, "data-target": job.target ?? "" },
    h("td", null, when(job.created_at)),
    h("td", null, h("a", { href: hashFor(job.job_id, filters), class: "mono", title: job.job_id }, String(job.job_id).slice(0, 8))),
    h("td", null, job.kind),
    h("td", null, badge(job.status, `status ${job.status}`)),
    h("td", null, job.target ?? "—"),
    h("td", { class: "num" }, ms(job.sla_ms)),
    h("td", null, job.sla_met === null || job.sla_met === undefined ? "—" : h("span", { class: job.sla_met ? "yes" : "no" }, job.sla_met ? "met" : "missed")),
    h("td", { class: "num" }, ms(job.latency_ms)),
  );
  row.addEventListener("click", (event) => {
    if (!event.target.closest("a")) location.hash = hashFor(job.job_id, filters);
  });
  return row;
}

export default {
  name: "jobs",
  title: "Jobs",
  mount(root, route) {
    let filters = filtersOf(route.query);
    let selected = route.id || null;
    let cursors = [null]; // cursor of each page seen so far; the last is the current page
    let list = null;
    let detail = null;
    const listRegion = h("section", { class: "job-list", "aria-label": "Jobs" });
    const detailRegion = h("section", { class: "job-detail", "aria-label": "Job detail" });
    const navigate = (next) => {
      location.hash = hashFor(selected, next);
    };
    const form = filterForm(filters, navigate);
    fill(
      root,
      h("h1", null, "Jobs"),
      form,
      h("div", { class: "split" }, listRegion, detailRegion),
    );

    function renderList(body, page) {
      const first = cursors.length === 1;
      if (!page.items.length) {
        fill(body, emptySentence(filters, first));
      } else {
        const headers = ["Submitted", "Job", "Kind", "Status", "Target", "SLA", "SLA met", "Model call"];
        fill(body, h("div", { class: "scroll" }, table(headers, page.items.map((job) => jobRow(job, selected, filters)), "data jobs")));
      }
      const newer = h("button", { type: "button", class: "secondary", disabled: first }, "← Newer");
      const older = h("button", { type: "button", class: "secondary", disabled: !page.next_cursor }, "Older →");
      newer.addEventListener("click", () => turn(() => cursors.pop()));
      older.addEventListener("click", () => turn(() => cursors.push(page.next_cursor)));
      body.append(h("nav", { class: "pager", "aria-label": "Pages" }, newer, h("span", null, ` page ${cursors.length} `), older));
    }

    function turn(move) {
      move();
      startList();
    }

    function startList() {
      list?.stop();
      const cursor = cursors[cursors.length - 1];
      const query = {
        limit: PAGE_SIZE,
        cursor,
        status: filters.status,
        target: filters.target,
        kind: filters.kind,
        since: isoFromLocal(filters.since),
        until: isoFromLocal(filters.until),
      };
      list = live(listRegion, { load: () => api("api/jobs", { query }), render: renderList, interval: cursor ? 0 : LIST_REFRESH_MS });
    }

    function startDetail() {
      detail?.stop();
      detail = null;
      for (const row of listRegion.querySelectorAll("tr.job-row")) row.classList.toggle("selected", row.dataset.jobId === selected);
      if (!selected) {
        fill(detailRegion, sentence("Pick a job to see its timeline, result and routing explanation.", "empty hint-panel"));
        return;
      }
      detail = live(detailRegion, {
        load: () => loadJob(selected),
        render: (body, job) => fill(body, jobView(job)),
        interval: DETAIL_REFRESH_MS,
        until: (job) => TERMINAL.has(job.status.status),
      });
    }

    startList();
    startDetail();
    return {
      update(next) {
        const nextFilters = filtersOf(next.query);
        if (FILTERS.some((name) => nextFilters[name] !== filters[name])) {
          filters = nextFilters;
          for (const name of FILTERS) form.elements[name].value = filters[name];
          cursors = [null];
          startList();
        }
        if ((next.id || null) !== selected) {
          selected = next.id || null;
          startDetail();
        }
      },
      stop() {
        list?.stop();
        detail?.stop();
      },
    };
  },
};
