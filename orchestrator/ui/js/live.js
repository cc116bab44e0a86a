// Regions of a page that load themselves, refresh while the tab is visible, and say in a
// sentence what went wrong (keeping the last good data on screen) instead of going blank.

import { asSentence, AuthRequired, describe, transient } from "./api.js";
import { fill, h } from "./dom.js";

export const RETRY_MS = 5000; // how long to wait before retrying a call that found the API down

/**
 * Keep `el` filled with the latest data.
 *   load()             -> Promise of data (calls api())
 *   render(body, data) -> draws data into body
 *   interval           -> refresh period in ms while the tab is visible; 0 loads once
 *   until(data)        -> true when refreshing should stop (e.g. a job reached a final state)
 * Returns {refresh(), stop()}; a page calls stop() when it is left.
 */
export function live(el, { load, render, interval = 0, until = () => false }) {
  const problem = h("p", { class: "problem", role: "alert", hidden: true });
  const body = h("div", { class: "live-body" });
  fill(el, problem, body);
  let timer = null;
  let ticker = null;
  let stopped = false;
  let deferred = false;
  let generation = 0;

  const clearTimers = () => {
    clearTimeout(timer);
    clearInterval(ticker);
    timer = ticker = null;
  };
  const schedule = (delay) => {
    if (!stopped) timer = setTimeout(run, delay);
  };

  function countdown(err) {
    let left = Math.round(RETRY_MS / 1000);
    const say = () => {
      problem.textContent = `${describe(err).replace(/[.\s]+$/, "")}; retrying in ${left} s.`;
    };
    say();
    ticker = setInterval(() => {
      left = Math.max(0, left - 1);
      say();
    }, 1000);
    schedule(RETRY_MS);
  }

  async function run() {
    clearTimers();
    if (stopped) return;
    if (document.hidden) {
      deferred = true; // picked up by onVisible
      return;
    }
    const mine = ++generation;
    try {
      const data = await load();
      if (stopped || mine !== generation) return;
      problem.hidden = true;
      body.classList.remove("stale");
      render(body, data);
      if (interval && !until(data)) schedule(interval);
    } catch (err) {
      if (stopped || mine !== generation || err instanceof AuthRequired) return;
      problem.hidden = false;
      body.classList.add("stale");
      if (transient(err)) {
        countdown(err);
      } else {
        problem.textContent = asSentence(describe(err));
        if (interval) schedule(interval);
      }
    }
  }

  function onVisible() {
    if (!document.hidden && deferred) {
      deferred = false;
      run();
    }
  }

  document.addEventListener("visibilitychange", onVisible);
  run();
  return {
    refresh: run,
    stop() {
      stopped = true;
      clearTimers();
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}
