// The console shell: hash routing between the six pages, the key prompt that guards them,
// and the API's readiness in the header.
//
// Routes: #/<page>[/<job id>][?filters]. Job ids and filters are not PHI, so they may sit in
// the URL; observations never do.

import { AUTH_EVENT, api, storedKey, storeKey } from "./api.js";
import { fill, sentence } from "./dom.js";
import jobs from "./pages/jobs.js";
import metrics from "./pages/metrics.js";
import route from "./pages/route.js";
import sla from "./pages/sla.js";
import submit from "./pages/submit.js";
import targets from "./pages/targets.js";

const PAGES = [targets, route, submit, jobs, sla, metrics];
const DEFAULT_PAGE = "targets";
const HEALTH_MS = 15000; // how often the header re-reads /readyz while the tab is visible

const $ = (id) => document.getElementById(id);
let current = null; // {page, handle}
let locked = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const [name, id] = path.split("/").filter(Boolean);
  let decoded = null;
  try {
    decoded = id ? decodeURIComponent(id) : null;
  } catch {
    decoded = id;
  }
  return { page: name || DEFAULT_PAGE, id: decoded, query: new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1)) };
}

function unmount() {
  current?.handle.stop();
  current = null;
}

function show(where) {
  if (locked) return;
  const page = PAGES.find((p) => p.name === where.page);
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.page === where.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!page) {
    unmount();
    fill($("page"), sentence(`There is no page called “${where.page}”. Pick one above.`));
    return;
  }
  document.title = `${page.title} · pedi-orchestrator console`;
  if (current && current.page === page && current.handle.update) {
    current.handle.update(where);
    return;
  }
  unmount();
  const root = $("page");
  root.replaceChildren();
  current = { page, handle: page.mount(root, where) || { stop() {} } };
}

// --- the key prompt --------------------------------------------------------------------------

function lock(usedKey) {
  if (locked || usedKey !== storedKey()) return; // a late answer to a call made with an older key
  locked = true;
  unmount();
  $("page").replaceChildren();
  $("page").hidden = true;
  $("key-prompt").hidden = false;
  $("key-message").textContent = usedKey
    ? "The API did not accept that key. Enter the right one."
    : "This API needs a key. Enter it once; this tab keeps it until it is closed.";
  $("key-input").value = "";
  $("key-input").focus();
}

async function unlock(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) {
    $("key-message").textContent = "Enter a key first.";
    return;
  }
  storeKey(key);
  syncKeyButton();
  locked = false;
  await checkKey(); // a wrong key locks again, with a message saying so
  if (locked) return;
  $("key-prompt").hidden = true;
  $("page").hidden = false;
  show(parseHash());
}

async function forget() {
  storeKey("");
  syncKeyButton();
  unmount();
  $("page").replaceChildren();
  await checkKey(); // with API_KEY set, the prompt comes back before any page content
  show(parseHash());
}

function syncKeyButton() {
  $("forget-key").hidden = !storedKey();
}

// --- readiness in the header -----------------------------------------------------------------

async function health() {
  const el = $("health");
  if (document.hidden) return;
  try {
    const response = await fetch(new URL("../readyz", document.baseURI), { cache: "no-store", credentials: "omit" });
    const body = await response.json();
    $("dev-mode").hidden = body.auth !== "dev-mode"; // no keys: say so on every page
    const down = Object.entries(body.checks || {}).filter(([, v]) => v !== "ok").map(([name]) => name);
    el.textContent = response.ok ? "API ready" : `${down.join(" and ") || "a dependency"} unavailable`;
    el.className = `health ${response.ok ? "ok" : "bad"}`;
  } catch {
    el.textContent = "API unreachable";
    el.className = "health bad";
  }
}

/** Ask an authenticated endpoint first, so the key prompt comes up before any page does. */
async function checkKey() {
  try {
    await api("api/jobs", { query: { limit: 1 } });
  } catch {
    // 401 raised the prompt; any other problem is for the page to explain in its own words.
  }
}

async function start() {
  window.addEventListener(AUTH_EVENT, (event) => lock(event.detail.key));
  window.addEventListener("hashchange", () => show(parseHash()));
  $("key-form").addEventListener("submit", unlock);
  $("forget-key").addEventListener("click", forget);
  document.addEventListener("visibilitychange", health);
  syncKeyButton();
  health();
  setInterval(health, HEALTH_MS);
  await checkKey();
  show(parseHash());
}

start();
