// Building DOM safely, and formatting numbers and times for people.
//
// Every element is made with createElement and every piece of data goes in as a text node or
// an attribute value: nothing is ever parsed as HTML, so data cannot become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/** Append children: strings and numbers become text nodes; null, undefined and false are skipped. */
export function append(parent, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** h("td", {class: "num"}, "12 ms"): an HTML element. Attributes starting with "on" are listeners. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  return append(el, ...children);
}

/** An SVG element; same arguments as h. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  return append(el, ...children);
}

/** Replace everything inside el. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}

/** A sentence in place of a table or chart: empty states and problems. */
export function sentence(text, cls = "empty") {
  return h("p", { class: cls }, text);
}

export function table(headers, rows, cls = "data") {
  return h(
    "table",
    { class: cls },
    h("thead", null, h("tr", null, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", null, rows),
  );
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || String(text).replace(/[^a-z_-]/gi, "")}` }, text);
}

/** A small "label: value" grid. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(([, value]) => value !== undefined).map(([label, value]) => [h("dt", null, label), h("dd", null, value ?? "—")]),
  );
}

// --- formatting ------------------------------------------------------------------------------

const DASH = "—";

export function isNum(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/** A number for display: integers as they are; others without float noise (399.9999999999999
 * reads 400, 12.3456 reads 12.3, 0.000213 stays 0.000213). Anything else as text. */
export function num(value) {
  if (!isNum(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  return String(Math.abs(value) >= 100 ? Math.round(value) : Number(value.toPrecision(3)));
}

/** Milliseconds: "4.2 ms", "312 ms", "12.5 s". */
export function ms(value) {
  if (!isNum(value)) return DASH;
  if (Math.abs(value) >= 10000) return `${(value / 1000).toFixed(1)} s`;
  if (Math.abs(value) < 10) return `${value.toFixed(1)} ms`;
  return `${Math.round(value)} ms`;
}

/** A signed difference in milliseconds: "+120 ms". */
export function signedMs(value) {
  if (!isNum(value)) return DASH;
  return `${value > 0 ? "+" : value < 0 ? "−" : "±"}${ms(Math.abs(value))}`;
}

export function usd(value) {
  if (!isNum(value)) return DASH;
  return value !== 0 && Math.abs(value) < 0.01 ? `$${value.toFixed(4)}` : `$${value.toFixed(2)}`;
}

/** A share 0..1 as a percentage. */
export function pct(value, digits = 1) {
  return isNum(value) ? `${(value * 100).toFixed(digits)} %` : DASH;
}

export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = isNum(value) ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local time "14:03:22", with the date when it is not today. */
export function clock(value) {
  const date = toDate(value);
  if (!date) return DASH;
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

/** "12 s ago", "3 min ago", "2 h ago". */
export function ago(value, now = Date.now()) {
  const date = toDate(value);
  if (!date) return DASH;
  const seconds = Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

/** A <time> element showing clock() with the full ISO time on hover. */
export function when(value) {
  const date = toDate(value);
  return date ? h("time", { datetime: date.toISOString(), title: date.toISOString() }, clock(date)) : DASH;
}

export function shortId(id) {
  return String(id || "").slice(0, 8);
}

/** A link to a job on the Jobs page (job ids are not PHI, so they may sit in the URL). */
export function jobLink(id, text) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono", title: String(id) }, text || shortId(id));
}
