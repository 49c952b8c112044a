// The incident queue (#/incidents): filters, the table (newest first, paged by cursor),
// rows updated and new incidents prepended live from the event stream.

import { getJson } from "./api.js";
import { badge, errorBox, h, main, show } from "./dom.js";
import { formatTime, t } from "./i18n.js";
import { cameraName, inGrid, route, state } from "./state.js";

/** @typedef {import("./api.js").Incident} Incident */
/** @typedef {import("./state.js").Filters} Filters */
/** @typedef {import("./state.js").View} View */
/**
 * A queue row, holding the incident it shows (merged with live updates).
 * @typedef {HTMLTableRowElement & {_incident?: Incident}} IncidentRow
 */

const STATUS_ORDER = { new: 0, acknowledged: 1, resolved: 2, dismissed: 3 };

/** @returns {View} */
export function renderQueue() {
  const f = state.filters;
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, t("queue.more"));
  const announce = h("p", { class: "announce", role: "status", "aria-live": "polite" });
  const empty = h("p", { class: "hint", hidden: true }, t("queue.empty"));
  let cursor = null;
  let fresh = 0;

  /**
   * @param {string} name
   * @param {string[][]} options [value, text] pairs
   */
  const select = (name, options) =>
    h(
      "select",
      { name, id: `f-${name}` },
      h("option", { value: "" }, t("queue.any")),
      options.map(([value, text]) => h("option", { value, selected: f[name] === value }, text)),
    );
  const cameras = [...state.cameras.values()].map((c) => [c.id, c.name]);
  const form = h(
    "form",
    { class: "filters", "aria-label": t("queue.filters"), onsubmit: (e) => applyFilters(e, form) },
    field("camera_id", t("queue.camera"), select("camera_id", cameras)),
    field("type", t("queue.type"), select("type", ["motion", "crowd"].map((v) => [v, t(`type.${v}`)]))),
    field(
      "status",
      t("queue.status"),
      select("status", Object.keys(STATUS_ORDER).map((v) => [v, t(`status.${v}`)])),
    ),
    field("since", t("queue.since"), h("input", { type: "datetime-local", name: "since", id: "f-since", value: f.since || "" })),
    field("until", t("queue.until"), h("input", { type: "datetime-local", name: "until", id: "f-until", value: f.until || "" })),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, t("queue.apply")),
      h("button", { type: "button", class: "secondary", onclick: () => { state.filters = {}; route(); } }, t("queue.reset")),
    ),
  );
  const table = h(
    "table",
    { class: "queue", id: "queue" },
    h("caption", { class: "sr" }, t("queue.title")),
    h("thead", {}, h("tr", {},
      [t("queue.started"), t("queue.camera"), t("queue.grid"), t("queue.type"), t("queue.status"), t("queue.clip")]
        .map((text) => h("th", { scope: "col" }, text)))),
    tbody,
  );
  show(
    h("div", { class: "title-row" },
      h("h1", {}, t("queue.title")),
      state.grid ? h("span", { class: "chip" }, t("queue.grid_filter", { grid: state.grid.name })) : null,
      announce),
    form, table, empty, more,
  );

  /** @param {boolean} append */
  async function load(append) {
    const params = queryFor(f);
    if (append && cursor) params.set("cursor", cursor);
    try {
      const page = await getJson(`/incidents?${params}`);
      if (!append) tbody.replaceChildren();
      for (const incident of page.items) if (inGrid(incident.grid_code)) tbody.append(queueRow(incident));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = tbody.children.length > 0;
    } catch (err) {
      main().append(errorBox(err));
    }
  }
  more.addEventListener("click", () => load(true));
  load(false);

  return {
    async onEvent(event) {
      if (!event.type.startsWith("incident.") || !event.data?.id) return;
      const row = /** @type {IncidentRow | null} */ (tbody.querySelector(`tr[data-id="${CSS.escape(event.data.id)}"]`));
      if (row) {
        row.replaceWith(queueRow({ ...row._incident, ...event.data, clip: clipOf(row._incident, event.data) }));
        return;
      }
      if (event.type !== "incident.created") return;
      const incident = await getJson(`/incidents/${encodeURIComponent(event.data.id)}`).catch(() => null);
      if (!incident || !matches(incident, f) || tbody.querySelector(`tr[data-id="${CSS.escape(incident.id)}"]`)) return;
      const newRow = queueRow(incident);
      newRow.classList.add("fresh");
      tbody.prepend(newRow);
      empty.hidden = true;
      fresh += 1;
      announce.textContent = t("queue.new_count", { n: fresh });
    },
  };
}

/**
 * @param {string} name
 * @param {string} label
 * @param {HTMLElement} control
 */
function field(name, label, control) {
  return h("div", { class: "field" }, h("label", { for: `f-${name}` }, label), control);
}

/**
 * @param {SubmitEvent} event
 * @param {HTMLFormElement} form
 */
function applyFilters(event, form) {
  event.preventDefault();
  const data = new FormData(form);
  state.filters = /** @type {Filters} */ (Object.fromEntries([...data.entries()].filter(([, v]) => v)));
  route();
}

/** @param {Filters} f */
function queryFor(f) {
  const params = new URLSearchParams({ limit: "50" });
  for (const key of ["camera_id", "type", "status"]) if (f[key]) params.set(key, f[key]);
  for (const key of ["since", "until"]) if (f[key]) params.set(key, new Date(f[key]).toISOString());
  if (state.grid?.leaf) params.set("grid_code", state.grid.code);
  return params;
}

/**
 * Whether an incident belongs in the queue as filtered.
 * @param {Incident} incident
 * @param {Filters} f
 */
function matches(incident, f) {
  if (f.camera_id && incident.camera_id !== f.camera_id) return false;
  if (f.type && incident.type !== f.type) return false;
  if (f.status && incident.status !== f.status) return false;
  const started = new Date(incident.started_at);
  if (f.since && started < new Date(f.since)) return false;
  if (f.until && started >= new Date(f.until)) return false;
  return inGrid(incident.grid_code);
}

/**
 * An incident's clip after a live event's summary (which carries clip_state, if anything).
 * @param {Incident} incident
 * @param {Record<string, any>} summary
 */
function clipOf(incident, summary) {
  if (!("clip_state" in summary)) return incident.clip;
  return summary.clip_state ? { ...(incident.clip || {}), state: summary.clip_state } : null;
}

/** @param {Incident} incident */
function queueRow(incident) {
  const href = `#/incidents/${encodeURIComponent(incident.id)}`;
  const clip = incident.clip?.state || "none";
  const row = /** @type {IncidentRow} */ (h(
    "tr",
    { dataset: { id: incident.id, status: incident.status }, class: `status-${incident.status}` },
    h("td", {}, h("a", { href }, formatTime(incident.started_at))),
    h("td", {}, cameraName(incident.camera_id)),
    h("td", {}, incident.grid_code || "—"),
    h("td", {}, t(`type.${incident.type}`)),
    h("td", {}, badge("status", incident.status, t(`status.${incident.status}`))),
    h("td", {}, badge("clip", clip, t(`clip.${clip}`))),
  ));
  row._incident = incident;
  row.addEventListener("click", (e) => {
    if (/** @type {HTMLElement} */ (e.target).tagName !== "A") location.hash = href;
  });
  return row;
}
