// The JSON API, as the console calls it: the key, timeouts, and errors a page can explain.
//
// The key lives in sessionStorage (this tab, until it closes) and travels only as the
// x-api-key header. Observations travel only in POST bodies, never in a URL.

const KEY_STORAGE = "pedi-console.api-key";
const CALL_TIMEOUT_MS = 10000; // a call slower than this is treated as "unreachable"
export const AUTH_EVENT = "console:auth-required";

export function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** The API answered with an error body {"error": {code, message, field?, fields?}}. */
export class ApiError extends Error {
  constructor(status, path, body) {
    const detail = (body && body.error) || {};
    super(detail.message || `The API answered ${status}`);
    this.status = status;
    this.path = path;
    this.code = detail.code || "http_error";
    this.field = detail.field || null;
    this.fields = Array.isArray(detail.fields) ? detail.fields : detail.field ? [{ field: detail.field, message: detail.message }] : [];
  }
}

/** 401: the page must wait behind the key prompt. */
export class AuthRequired extends ApiError {}

/** No answer at all: refused connection, timeout, or an answer that is not JSON. */
export class Unreachable extends Error {
  constructor(path, why) {
    super(`The API is unreachable (${why})`);
    this.path = path;
  }
}

function urlFor(path, query) {
  // Relative to /ui/, so the console also works when the API sits behind a path prefix.
  const url = new URL(`../${path}`, document.baseURI);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, String(value));
  }
  return url;
}

async function parse(response, path) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    if (response.ok) throw new Unreachable(path, "the answer was not JSON");
    return null;
  }
}

/**
 * Call the API: api("api/jobs", {query: {status: "failed"}}) or api("api/submit", {method: "POST", body}).
 * Resolves to the parsed JSON; rejects with AuthRequired, ApiError or Unreachable.
 */
export async function api(path, { method = "GET", body, query, headers = {} } = {}) {
  const key = storedKey();
  const sent = { Accept: "application/json", ...headers };
  if (key) sent["x-api-key"] = key;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), CALL_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(urlFor(path, query), {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: timeout.signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new Unreachable(path, err.name === "AbortError" ? `no answer within ${CALL_TIMEOUT_MS / 1000} s` : "connection failed");
  } finally {
    clearTimeout(timer);
  }
  const data = await parse(response, path);
  if (response.ok) return data;
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent(AUTH_EVENT, { detail: { key } }));
    throw new AuthRequired(401, path, data);
  }
  throw new ApiError(response.status, path, data);
}

/** One sentence a person can act on, for any error api() raises. */
export function describe(err) {
  if (err instanceof Unreachable) return "The API is unreachable";
  if (err instanceof AuthRequired) return "The API needs a valid key";
  if (err instanceof ApiError) {
    if (err.status === 404 && err.code === "not_found" && /^not found$/i.test(err.message)) {
      return `This API does not serve /${err.path.split("?")[0]} (it answered 404); it may be older than this console`;
    }
    if (err.status >= 500) return err.message.replace(/[.;\s]*retry shortly\.?$/i, "") || `The API failed (${err.status})`;
    return err.message;
  }
  return `Something went wrong in the console: ${err && err.message ? err.message : err}`;
}

/** End a message with exactly one full stop. */
export function asSentence(text) {
  return `${String(text).trim().replace(/[.\s]+$/, "")}.`;
}

/** Worth retrying by itself: the API or what it depends on is down for now. */
export function transient(err) {
  return err instanceof Unreachable || (err instanceof ApiError && err.status >= 500);
}
