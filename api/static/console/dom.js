// DOM helpers of the console: element creation without parsing HTML strings (CSP-safe, no markup
// injection), badges, the main area and error boxes.

import { t } from "./i18n.js";

/** @typedef {Node | string | number | boolean | null | undefined} Child */

/** The page's main area, where views render. */
export const main = () => document.getElementById("main");

/**
 * Create an element: h("a", {href: "#", class: "x", onclick: fn}, "text", child).
 * Attributes that are null, undefined or false are left out; on* are listeners; dataset
 * is an object; muted sets the property too.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "muted") {
      /** @type {HTMLMediaElement} */ (el).muted = true; // the attribute alone does not mute a created element (autoplay)
      el.setAttribute("muted", "");
    }
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A coloured label: class "badge {kind}-{value}" (style.css colours each). */
export function badge(kind, value, text) {
  return h("span", { class: `badge ${kind}-${value}` }, text);
}

/** Replace the main area's content. */
export function show(...nodes) {
  const el = main();
  el.replaceChildren(...nodes);
}

export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, t("error.generic", { detail: err.message }));
}
