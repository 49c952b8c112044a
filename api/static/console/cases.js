// The grid platform's cases (案件): the list (#/cases: state, event class, grid, assignee,
// deadline with the overdue ones marked, filtered by state and "overdue only") and a case's
// page (#/cases/{id}: facts, linked incidents and their evidence, the timeline, and the form
// moving it one step of its handling); both follow the case.* events of the live stream.
// The steps offered are the server's (storage/case_flow.py), so the form cannot ask for
// one it refuses; should the case have moved meanwhile, the server's 409 is shown.

import { api, apiError, getJson } from "./api.js";
import { badge, errorBox, h, main, show } from "./dom.js";
import { formatTime, t } from "./i18n.js";
import { cameraName, inGrid, state } from "./state.js";

/** @typedef {import("./api.js").Case} Case */
/** @typedef {import("./api.js").CaseDetail} CaseDetail */
/** @typedef {import("./api.js").EventClass} EventClass */
/** @typedef {import("./state.js").View} View */
/**
 * A row of the case list, holding the case it shows.
 * @typedef {HTMLTableRowElement & {_case?: Case}} CaseRow
 */

/** From each state, where a case may go next: the server's TRANSITIONS (storage/case_flow.py).
 *  @type {Record<string, string[]>} */
export const NEXT_STATES = {
  reported: ["accepted", "rejected"],
  accepted: ["filed"],
  rejected: [],
  filed: ["dispatched"],
  dispatched: ["handling"],
  handling: ["handled"],
  handled: ["verified", "dispatched"], // the check failed: dispatched again (返工)
  verified: ["closed"],
  closed: [],
};
const CASE_STATES = Object.keys(NEXT_STATES);

/** @type {Promise<EventClass[]> | null} */
let classes = null;

/** The event classes (GET /cases/classes): settings, so loaded once (again after a failure).
 *  @returns {Promise<EventClass[]>} */
export function eventClasses() {
  classes ??= getJson("/cases/classes").catch((err) => {
    classes = null;
    throw err;
  });
  return classes;
}

/** A case's state in words; an unknown one (added server-side later) as it is.
 *  @param {string} value */
export function caseStateName(value) {
  const text = t(`case_state.${value}`);
  return text === `case_state.${value}` ? value : text;
}

/** A case's state as a coloured badge.
 *  @param {string} value */
export function caseBadge(value) {
  return badge("case", value, caseStateName(value));
}

/** An event class as "code name", or its bare code when not (or not yet) known.
 *  @param {string | null | undefined} code
 *  @param {EventClass[]} known */
function classLabel(code, known) {
  if (!code) return "—";
  const found = known.find((c) => c.code === code);
  return found ? `${code} ${found.name}` : code;
}

/** @param {Case} c */
function deadlineCell(c) {
  if (!c.deadline_at) return "—";
  const when = formatTime(c.deadline_at);
  return c.overdue ? h("span", { class: "deadline" }, when, " ", badge("due", "overdue", t("cases.overdue"))) : when;
}

// -- The list (#/cases) ----------------------------------------------------------------------------

/** @returns {View} */
export function renderCases() {
  const f = state.caseFilters;
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, t("cases.more"));
  const empty = h("p", { class: "hint", hidden: true, id: "cases-empty" }, t("cases.empty"));
  /** @type {EventClass[]} */
  let known = [];
  /** @type {string | null} */
  let cursor = null;

  const stateSelect = h(
    "select",
    { name: "state", id: "f-state" },
    h("option", { value: "" }, t("queue.any")),
    CASE_STATES.map((s) => h("option", { value: s, selected: f.state === s }, caseStateName(s))),
  );
  const overdue = h("input", { type: "checkbox", name: "overdue", id: "f-overdue", checked: f.overdue === "true" });
  const form = h(
    "form",
    { class: "filters", "aria-label": t("queue.filters"), onchange: apply, onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("div", { class: "field" }, h("label", { for: "f-state" }, t("cases.state")), stateSelect),
    h("div", { class: "field check" }, overdue, h("label", { for: "f-overdue" }, t("cases.overdue_only"))),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: () => { stateSelect.value = ""; overdue.checked = false; apply(); } }, t("queue.reset"))),
  );
  const table = h(
    "table",
    { class: "queue", id: "cases" },
    h("caption", { class: "sr" }, t("cases.title")),
    h("thead", {}, h("tr", {},
      ["cases.created", "cases.case", "cases.state", "cases.class", "cases.grid", "cases.assignee", "cases.deadline"]
        .map((key) => h("th", { scope: "col" }, t(key))))),
    tbody,
  );
  show(
    h("div", { class: "title-row" },
      h("h1", {}, t("cases.title")),
      state.grid ? h("span", { class: "chip" }, t("queue.grid_filter", { grid: state.grid.name })) : null),
    form, table, empty, more,
  );

  /** Filters changed: kept for the next visit, the list reloaded in place (focus stays). */
  function apply() {
    f.state = stateSelect.value;
    f.overdue = overdue.checked ? "true" : "";
    load(false);
  }

  /** @param {boolean} append */
  async function load(append) {
    const params = new URLSearchParams({ limit: "50" });
    if (f.state) params.set("state", f.state);
    if (f.overdue === "true") params.set("overdue", "true");
    if (state.grid) params.set("grid_code", state.grid.code); // the grid and those below it
    if (append && cursor) params.set("cursor", cursor);
    try {
      const [page, list] = await Promise.all([getJson(`/cases?${params}`), eventClasses().catch(() => known)]);
      known = list;
      if (!append) tbody.replaceChildren();
      for (const c of page.items) tbody.append(caseRow(c, known));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = tbody.children.length > 0;
    } catch (err) {
      main().append(errorBox(err));
    }
  }
  more.addEventListener("click", () => load(true));
  load(false);

  /** @param {Case} c */
  const matches = (c) =>
    (!f.state || c.state === f.state) && (f.overdue !== "true" || c.overdue) && (!state.grid || inGrid(c.grid_code));

  return {
    async onEvent(event) {
      const id = event.data?.case_id;
      if (!event.type.startsWith("case.") || !id) return;
      const row = /** @type {CaseRow | null} */ (tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`));
      if (!row && event.type !== "case.created") return;
      /** @type {Case | null} */
      const c = await getJson(`/cases/${encodeURIComponent(id)}`).catch(() => null);
      const current = /** @type {CaseRow | null} */ (tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`));
      if (!c) return;
      if (current) {
        if (matches(c)) current.replaceWith(caseRow(c, known));
        else current.remove();
      } else if (matches(c)) {
        const fresh = caseRow(c, known);
        fresh.classList.add("fresh");
        tbody.prepend(fresh);
      }
      empty.hidden = tbody.children.length > 0;
    },
  };
}

/**
 * @param {Case} c
 * @param {EventClass[]} known
 */
function caseRow(c, known) {
  const href = `#/cases/${encodeURIComponent(c.id)}`;
  const row = /** @type {CaseRow} */ (h(
    "tr",
    { dataset: { id: c.id, state: c.state, overdue: String(c.overdue) }, class: c.overdue ? "overdue" : null },
    h("td", {}, h("a", { href }, formatTime(c.created_at))),
    h("td", {}, c.title),
    h("td", {}, caseBadge(c.state)),
    h("td", {}, classLabel(c.class_code, known)),
    h("td", {}, c.grid_code || "—"),
    h("td", {}, c.assignee || "—"),
    h("td", {}, deadlineCell(c)),
  ));
  row._case = c;
  row.addEventListener("click", (e) => {
    if (/** @type {HTMLElement} */ (e.target).tagName !== "A") location.hash = href;
  });
  return row;
}

// -- A case (#/cases/{id}) -------------------------------------------------------------------------

/**
 * @param {string} id
 * @returns {View}
 */
export function renderCase(id) {
  const heading = h("h1", {}, t("case.title"));
  const facts = h("dl", { class: "facts", id: "case-facts" });
  const incidents = h("section", { class: "card", "aria-labelledby": "case-incidents-title" });
  const steps = h("section", { class: "card", "aria-labelledby": "timeline-title" });
  const move = h("section", { class: "card review", "aria-labelledby": "move-title" });
  show(
    h("p", {}, h("a", { href: "#/cases" }, "← " + t("case.back"))),
    heading,
    h("div", { class: "incident" }, h("div", {}, steps, incidents), h("div", { class: "side-col" }, facts, move)),
  );
  /** @type {string[]} */
  let incidentIds = [];
  const form = transitionForm(move, render, () => refresh());

  /** @param {CaseDetail} c */
  async function render(c) {
    const known = await eventClasses().catch(() => []);
    incidentIds = c.incident_ids;
    const badgeEl = caseBadge(c.state);
    badgeEl.id = "case-state";
    heading.replaceChildren(`${c.title} `, badgeEl);
    renderCaseFacts(facts, c, known);
    renderIncidents(incidents, c);
    renderTimeline(steps, c);
    form.update(c);
  }
  async function refresh() {
    try {
      await render(await getJson(`/cases/${encodeURIComponent(id)}`));
    } catch (err) {
      show(err.status === 404 ? h("p", { class: "error" }, t("error.notfound")) : errorBox(err));
    }
  }
  refresh();
  return {
    onEvent(event) {
      if (event.type.startsWith("case.") && event.data?.case_id === id) refresh();
      else if (event.type.startsWith("incident.") && incidentIds.includes(event.data?.id)) refresh();
    },
  };
}

/**
 * @param {HTMLElement} facts
 * @param {CaseDetail} c
 * @param {EventClass[]} known
 */
function renderCaseFacts(facts, c, known) {
  /** @param {string} label @param {string | Node} value */
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  const event = known.find((k) => k.code === c.class_code);
  facts.replaceChildren(
    ...row(t("case.ref"), h("span", { class: "mono" }, c.external_ref)),
    ...row(t("cases.state"), caseBadge(c.state)),
    ...row(t("cases.class"), event ? `${classLabel(c.class_code, known)} · ${event.category}` : classLabel(c.class_code, known)),
    ...row(t("cases.grid"), c.grid_code || "—"),
    ...row(t("cases.assignee"), h("span", { id: "case-assignee-now" }, c.assignee || "—")),
    ...row(t("cases.deadline"), deadlineCell(c)),
    ...(c.location ? row(t("case.location"), `${c.location.lat.toFixed(5)}, ${c.location.lon.toFixed(5)}`) : []),
    ...(c.camera_national_id ? row(t("case.camera_id"), h("span", { class: "mono" }, c.camera_national_id)) : []),
    ...row(t("cases.created"), formatTime(c.created_at)),
    ...row(t("case.updated"), formatTime(c.updated_at)),
    ...(c.closed_at ? row(t("case.closed"), formatTime(c.closed_at)) : []),
  );
}

/**
 * The linked incidents, each with its clip's evidence (SHA-256 once archived).
 * @param {HTMLElement} box
 * @param {CaseDetail} c
 */
function renderIncidents(box, c) {
  const evidence = new Map(c.evidence.map((e) => [e.incident_id, e]));
  box.replaceChildren(
    h("h2", { id: "case-incidents-title" }, t("case.incidents")),
    c.incidents.length
      ? h("ul", { class: "recent", id: "case-incidents" }, c.incidents.map((i) => {
          const proof = evidence.get(i.id);
          return h("li", { dataset: { id: i.id } },
            h("a", { href: `#/incidents/${encodeURIComponent(i.id)}` },
              `${t(`type.${i.type}`)} · ${cameraName(i.camera_id)} · ${formatTime(i.started_at)}`),
            " ", badge("status", i.status, t(`status.${i.status}`)),
            proof?.sha256
              ? h("div", { class: "hint mono evidence" }, `${t("incident.sha")}: ${proof.sha256}`)
              : h("div", { class: "hint" }, t("case.no_clip")));
        }))
      : h("p", { class: "hint" }, t("case.no_incidents")),
  );
}

/**
 * @param {HTMLElement} box
 * @param {CaseDetail} c
 */
function renderTimeline(box, c) {
  box.replaceChildren(
    h("h2", { id: "timeline-title" }, t("case.timeline")),
    h(
      "table",
      { class: "history", id: "timeline" },
      h("thead", {}, h("tr", {},
        ["history.at", "case.step", "history.actor", "cases.assignee", "cases.deadline", "history.note"]
          .map((k) => h("th", { scope: "col" }, t(k))))),
      h("tbody", {}, c.timeline.map((step) =>
        h("tr", { dataset: { from: step.from || "", to: step.to } },
          h("td", {}, formatTime(step.at)),
          h("td", {}, step.from ? [caseStateName(step.from), " → ", caseBadge(step.to)] : [t("case.opened"), " ", caseBadge(step.to)]),
          h("td", { class: "nowrap" }, step.actor),
          h("td", {}, step.assignee || ""),
          h("td", {}, step.deadline_at ? formatTime(step.deadline_at) : ""),
          h("td", {}, step.note || "")))),
    ),
  );
}

/** The form moving a case one step: built once per page; update(c) offers the steps
 *  allowed from the case's state, so a live refresh never wipes what is being typed.
 *  @param {HTMLElement} box
 *  @param {(c: CaseDetail) => Promise<void>} moved shows the case the server answered
 *  @param {() => Promise<void>} refresh */
function transitionForm(box, moved, refresh) {
  /** @type {CaseDetail | null} */
  let current = null;
  const to = h("select", { id: "case-to", name: "to" });
  const assignee = h("input", { id: "case-assignee", name: "assignee", maxlength: 200, autocomplete: "off", "aria-describedby": "case-assignee-hint" });
  const deadline = h("input", { type: "datetime-local", id: "case-deadline", name: "deadline_at", "aria-describedby": "case-deadline-hint" });
  const note = h("textarea", { id: "case-note", name: "note", rows: 3, maxlength: 2000 });
  const message = h("p", { class: "error", role: "alert", id: "case-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "case-move" }, t("case.move"));
  const final = h("p", { class: "hint", id: "case-final", hidden: true }, t("case.final"));
  const form = h(
    "form",
    { id: "transition", novalidate: true, onsubmit: (/** @type {SubmitEvent} */ e) => { e.preventDefault(); send(); } },
    h("label", { for: "case-to" }, t("case.next")),
    to,
    h("label", { for: "case-assignee" }, t("cases.assignee")),
    assignee,
    h("p", { class: "hint", id: "case-assignee-hint" }, t("case.assignee_hint")),
    h("label", { for: "case-deadline" }, t("case.deadline")),
    deadline,
    h("p", { class: "hint", id: "case-deadline-hint" }, t("case.deadline_hint")),
    h("label", { for: "case-note" }, t("incident.note")),
    note,
    h("div", { class: "actions" }, submit),
  );
  box.replaceChildren(h("h2", { id: "move-title" }, t("case.move_title")), form, final, message);

  /** Dispatching needs an assignee (the department or grid worker sent). */
  function needs() {
    const dispatching = to.value === "dispatched";
    assignee.required = dispatching;
    if (dispatching && !assignee.value && current?.assignee) assignee.value = current.assignee; // 返工: same worker by default
  }
  to.addEventListener("change", needs);

  async function send() {
    message.textContent = "";
    if (!current) return;
    const who = assignee.value.trim();
    if (to.value === "dispatched" && !who) {
      message.textContent = t("case.need_assignee");
      assignee.setAttribute("aria-invalid", "true");
      assignee.focus();
      return;
    }
    assignee.removeAttribute("aria-invalid");
    /** @type {Record<string, string | null>} */
    const body = { to: to.value, note: note.value.trim() || null };
    if (who) body.assignee = who;
    if (deadline.value) body.deadline_at = new Date(deadline.value).toISOString();
    submit.disabled = true;
    try {
      const response = await api(`/cases/${encodeURIComponent(current.id)}/transitions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (response.ok) {
        note.value = assignee.value = deadline.value = "";
        await moved(await response.json());
        return;
      }
      const err = await apiError(response);
      message.textContent = response.status === 409 ? t("case.conflict", { detail: err.message }) : t("error.generic", { detail: err.message });
      await refresh(); // the case moved meanwhile: offer what its state allows now
    } catch (err) {
      message.textContent = t("error.generic", { detail: err.message });
    } finally {
      submit.disabled = !to.options.length;
    }
  }

  return {
    /** @param {CaseDetail} c */
    update(c) {
      current = c;
      const next = NEXT_STATES[c.state] || [];
      const chosen = to.value;
      to.replaceChildren(...next.map((s) =>
        h("option", { value: s, selected: s === chosen }, s === "dispatched" && c.state === "handled" ? t("case_step.rework") : t(`case_step.${s}`))));
      form.hidden = !next.length;
      final.hidden = next.length > 0;
      submit.disabled = !next.length;
      needs();
    },
  };
}
