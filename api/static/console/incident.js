// The incident page (#/incidents/{id}): facts, linked cases (with their state), snapshot and
// clip, the review form (acknowledge, resolve, dismiss, reopen, with a note), sending it to
// the grid platform as a case (上报网格平台) and the history; refreshed live when the incident
// or one of its cases changes.

import { api, apiError, getJson } from "./api.js";
import { caseBadge, eventClasses } from "./cases.js";
import { badge, errorBox, h, show } from "./dom.js";
import { evidenceSrc, playClip } from "./evidence.js";
import { formatTime, t } from "./i18n.js";
import { cameraName } from "./state.js";

/** @typedef {import("./api.js").Incident} Incident */
/** @typedef {import("./state.js").View} View */

/** The review actions, and the statuses each applies to. */
const TRANSITIONS = {
  acknowledge: ["new"],
  resolve: ["new", "acknowledged"],
  dismiss: ["new", "acknowledged"],
  reopen: ["resolved", "dismissed"],
};

/**
 * @param {string} id
 * @returns {View}
 */
export function renderIncident(id) {
  const facts = h("dl", { class: "facts" });
  const media = h("div", { class: "media" });
  const review = h("section", { class: "card review", "aria-labelledby": "review-title" });
  const report = h("section", { class: "card review", "aria-labelledby": "report-title" });
  const history = h("section", { class: "card", "aria-labelledby": "history-title" });
  const heading = h("h1", {}, t("incident.title"));
  /** @type {string[]} */
  const urls = [];
  let clipShown = null;
  show(
    h("p", {}, h("a", { href: "#/incidents" }, "← " + t("incident.back"))),
    heading,
    h("div", { class: "incident" }, media, h("div", { class: "side-col" }, facts, review, report, history)),
  );

  const form = reviewForm(review, () => refresh());
  reportForm(report, id, () => refresh());
  /** @type {string[]} */
  let caseIds = [];
  async function refresh() {
    /** @type {Incident} */
    let incident;
    try {
      incident = await getJson(`/incidents/${encodeURIComponent(id)}`);
    } catch (err) {
      show(err.status === 404 ? h("p", { class: "error" }, t("error.notfound")) : errorBox(err));
      return;
    }
    heading.replaceChildren(
      `${t(`type.${incident.type}`)} · ${cameraName(incident.camera_id)} `,
      badge("status", incident.status, t(`status.${incident.status}`)),
    );
    caseIds = incident.case_ids || [];
    renderFacts(facts, incident);
    form.update(incident);
    renderHistory(history, incident);
    const clipKey = `${incident.clip?.state}:${incident.clip?.url}`;
    if (clipShown !== clipKey) {
      clipShown = clipKey;
      renderMedia(media, incident, urls);
    }
  }
  refresh();
  return {
    onEvent(event) {
      // incident.linked names the incident as incident_id; case.* events name their case.
      const mine = event.data?.id === id || event.data?.incident_id === id;
      if (event.type.startsWith("incident.") && mine) refresh();
      else if (event.type.startsWith("case.") && caseIds.includes(event.data?.case_id)) refresh();
    },
    cleanup() {
      for (const url of urls) URL.revokeObjectURL(url);
    },
  };
}

/**
 * @param {HTMLElement} facts
 * @param {Incident} incident
 */
function renderFacts(facts, incident) {
  /** @param {string} label @param {string | Node} value */
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  facts.replaceChildren(
    ...row(t("incident.camera"), h("a", { href: `#/cameras/${encodeURIComponent(incident.camera_id)}` }, cameraName(incident.camera_id))),
    ...row(t("incident.started"), formatTime(incident.started_at)),
    ...row(t("incident.ended"), incident.ended_at ? formatTime(incident.ended_at) : t("incident.ongoing")),
    ...row(t("incident.grid"), incident.grid_code || "—"),
    ...(incident.peak_persons != null ? row(t("incident.persons"), String(incident.peak_persons)) : []),
    ...row(t("incident.cases"), casesList(incident.case_ids || [])),
  );
}

/** The linked cases, each a link to its page with its state.
 *  @param {string[]} ids */
function casesList(ids) {
  if (!ids.length) return t("incident.no_cases");
  const list = h("ul", { class: "cases", id: "incident-cases" });
  for (const id of ids) {
    const link = h("a", { href: `#/cases/${encodeURIComponent(id)}` }, id);
    const item = h("li", { dataset: { id } }, link);
    list.append(item);
    getJson(`/cases/${encodeURIComponent(id)}`)
      .then((/** @type {import("./api.js").Case} */ c) => {
        link.textContent = c.title;
        item.dataset.state = c.state;
        item.append(" ", caseBadge(c.state));
      })
      .catch(() => {});
  }
  return list;
}

/**
 * @param {HTMLElement} media
 * @param {Incident} incident
 * @param {string[]} urls blob: URLs to revoke when the page goes
 */
function renderMedia(media, incident, urls) {
  const snapshot = h("figure", { class: "snapshot" }, h("figcaption", {}, t("incident.snapshot")));
  const clip = h("figure", { class: "clip" }, h("figcaption", {}, t("incident.clip")));
  media.replaceChildren(clip, snapshot);
  if (incident.snapshot?.url) {
    const img = h("img", { alt: t("incident.snapshot"), id: "snapshot" });
    snapshot.append(img);
    evidenceSrc(incident.snapshot.url, urls).then((url) => {
      img.src = url;
    }, () => img.replaceWith(t("incident.no_snapshot")));
  } else snapshot.append(h("p", { class: "hint" }, t("incident.no_snapshot")));
  const state_ = incident.clip?.state;
  if (state_ === "archived" && incident.clip.url) {
    const video = h("video", { id: "clip", controls: true, preload: "metadata", playsinline: true, muted: true });
    clip.append(video, h("p", { class: "hint mono" }, `${t("incident.sha")}: ${incident.clip.sha256 || "—"}`));
    playClip(video, incident.clip.url, urls);
  } else if (state_ === "pending") clip.append(h("p", { class: "hint" }, t("incident.clip_pending")));
  else if (state_ === "failed") clip.append(h("p", { class: "error" }, t("incident.clip_failed", { error: incident.clip.error || "" })));
  else clip.append(h("p", { class: "hint" }, t("incident.no_clip")));
}

/** The review form: built once per incident page; update(incident) only sets which
 *  actions apply, so a live refresh never wipes a note being typed.
 *  @param {HTMLElement} box
 *  @param {() => Promise<void>} refresh */
function reviewForm(box, refresh) {
  /** @type {Incident | null} */
  let current = null;
  const note = h("textarea", { id: "note", rows: 3, maxlength: 2000, "aria-describedby": "note-hint" });
  const message = h("p", { class: "error", role: "alert" });
  const buttons = Object.keys(TRANSITIONS).map((action) =>
    h(
      "button",
      {
        type: "button",
        class: action === "resolve" || action === "acknowledge" ? "primary" : "secondary",
        disabled: true,
        dataset: { action },
        onclick: () => act(action),
      },
      t(`action.${action}`),
    ),
  );
  /** @param {string} action */
  async function act(action) {
    message.textContent = "";
    buttons.forEach((b) => (b.disabled = true));
    const body = JSON.stringify({ action, note: note.value.trim() || null });
    const response = await api(`/incidents/${encodeURIComponent(current.id)}/review`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    if (response.ok) note.value = "";
    else {
      const err = await apiError(response);
      message.textContent = response.status === 409 ? t("incident.conflict", { detail: err.message }) : err.message;
    }
    await refresh();
  }
  box.replaceChildren(
    h("h2", { id: "review-title" }, t("incident.review")),
    h("label", { for: "note" }, t("incident.note")),
    note,
    h("p", { class: "hint", id: "note-hint" }, t("incident.note_hint")),
    h("div", { class: "actions" }, buttons),
    message,
  );
  return {
    /** @param {Incident} incident */
    update(incident) {
      current = incident;
      for (const button of buttons) button.disabled = !TRANSITIONS[button.dataset.action].includes(incident.status);
    },
  };
}

/** Sending the incident to the grid platform: a case in `reported`, under the event class
 *  picked (the server's default for the incident's type when none is), with a note. Sending
 *  it again while that case is open answers the same case.
 *  @param {HTMLElement} box
 *  @param {string} id the incident's
 *  @param {() => Promise<void>} refresh */
function reportForm(box, id, refresh) {
  const klass = h("select", { id: "report-class", name: "class_code" }, h("option", { value: "" }, t("report.default_class")));
  const note = h("textarea", { id: "report-note", name: "note", rows: 2, maxlength: 2000 });
  const button = h("button", { type: "submit", class: "primary", id: "report" }, t("report.send"));
  const result = h("p", { id: "report-result", role: "status" });
  const message = h("p", { class: "error", role: "alert" });
  eventClasses().then((list) => {
    klass.append(...list.map((c) => h("option", { value: c.code }, `${c.code} ${c.name}`)));
  }, () => {}); // the server's default class is still offered
  /** @param {SubmitEvent} event */
  async function send(event) {
    event.preventDefault();
    message.textContent = "";
    button.disabled = true;
    try {
      const response = await api(`/incidents/${encodeURIComponent(id)}/report`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ class_code: klass.value || null, note: note.value.trim() || null }),
      });
      if (!response.ok) throw await apiError(response);
      /** @type {import("./api.js").Case} */
      const c = await response.json();
      note.value = "";
      result.replaceChildren(
        t(response.status === 201 ? "report.sent" : "report.already"), " ",
        h("a", { href: `#/cases/${encodeURIComponent(c.id)}` }, c.title), " ",
        caseBadge(c.state),
      );
      await refresh();
    } catch (err) {
      message.textContent = t("error.generic", { detail: err.message });
    } finally {
      button.disabled = false;
    }
  }
  box.replaceChildren(
    h("h2", { id: "report-title" }, t("report.title")),
    h("form", { id: "report-form", onsubmit: send },
      h("label", { for: "report-class" }, t("report.class")),
      klass,
      h("label", { for: "report-note" }, t("incident.note")),
      note,
      h("p", { class: "hint" }, t("report.hint")),
      h("div", { class: "actions" }, button)),
    result,
    message,
  );
}

/**
 * @param {HTMLElement} box
 * @param {Incident} incident
 */
function renderHistory(box, incident) {
  const items = incident.history || [];
  box.replaceChildren(
    h("h2", { id: "history-title" }, t("incident.history")),
    items.length
      ? h(
          "table",
          { class: "history", id: "history" },
          h("thead", {}, h("tr", {}, ["history.at", "history.actor", "history.action", "history.note"].map((k) => h("th", { scope: "col" }, t(k))))),
          h("tbody", {}, items.map((item) =>
            h("tr", { dataset: { action: item.action } },
              h("td", {}, formatTime(item.at)),
              h("td", {}, item.actor),
              h("td", {}, actionName(item.action)),
              h("td", {}, item.note || "")))),
        )
      : h("p", { class: "hint" }, t("incident.no_history")),
  );
}

/** A history action in words; unknown ones (added server-side later) as they are.
 *  @param {string} action */
function actionName(action) {
  const text = t(`action.${action}`);
  return text === `action.${action}` ? action : text;
}
