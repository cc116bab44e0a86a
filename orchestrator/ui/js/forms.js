// Form fields with a place for the API's 422 message next to each, and value readers.
//
// Forms are `novalidate`: the API is the one judge of what is valid, and its message for a
// field is shown under that field.

import { ApiError, asSentence, describe } from "./api.js";
import { h } from "./dom.js";

let counter = 0;

/** A labelled field; `control` must have a name attribute (the API's field name). */
export function field(label, control, hint) {
  const id = control.id || `f-${control.name}-${++counter}`;
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, "data-error-for": control.name, hidden: true });
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  control.setAttribute("aria-describedby", [hintEl && hintEl.id, error.id].filter(Boolean).join(" "));
  return h("div", { class: `field field-${control.name}` }, h("label", { for: id }, label), control, hintEl, error);
}

export function input(name, attrs = {}) {
  return h("input", { name, ...attrs });
}

export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map(([value, label]) => h("option", { value, selected: value === selected }, label)),
  );
}

export function checkbox(name, label, checked = false) {
  return h("label", { class: "check" }, h("input", { type: "checkbox", name, checked }), ` ${label}`);
}

/** The form-level message line (for errors that name no field of this form). */
export function formError() {
  return h("p", { class: "form-error", role: "alert", hidden: true });
}

/** A number from an input: undefined when empty; the raw text when not a number, so the API names the problem. */
export function numberValue(form, name) {
  const raw = form.elements[name].value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw;
}

export function textValue(form, name) {
  const raw = form.elements[name].value;
  return raw.trim() === "" ? undefined : raw;
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error, .form-error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Show an error from api(): each 422 message under its field, anything else on the form line. */
export function showErrors(form, err) {
  clearErrors(form);
  const general = form.querySelector(".form-error");
  const leftovers = [];
  const fields = err instanceof ApiError && err.status === 422 ? err.fields : [];
  for (const { field: name, message } of fields) {
    const slot = name ? form.querySelector(`[data-error-for="${CSS.escape(name)}"]`) : null;
    if (slot) {
      slot.textContent = message;
      slot.hidden = false;
      form.elements[name]?.setAttribute("aria-invalid", "true");
    } else {
      leftovers.push(name ? `${name}: ${message}` : message);
    }
  }
  if (!fields.length) leftovers.push(asSentence(describe(err)));
  if (general && leftovers.length) {
    general.textContent = leftovers.join(" ");
    general.hidden = false;
  }
}
