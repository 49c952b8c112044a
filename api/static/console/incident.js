// The incident page (#/incidents/{id}): facts, linked cases, snapshot and clip, the review
// form (acknowledge, resolve, dismiss, reopen, with a note) and the history; refreshed
// live when the incident changes.

import { api, apiError, getJson } from "./api.js";
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
  const history = h("section", { class: "card", "aria-labelledby": "history-title" });
  const heading = h("h1", {}, t("incident.title"));
  /** @type {string[]} */
  const urls = [];
  let clipShown = null;
  show(
    h("p", {}, h("a", { href: "#/incidents" }, "← " + t("incident.back"))),
    heading,
    h("div", { class: "incident" }, media, h("div", { class: "side-col" }, facts, review, history)),
  );

  const form = reviewForm(review, () => refresh());
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
      if (event.type.startsWith("incident.") && event.data?.id === id) refresh();
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

/** @param {string[]} ids */
function casesList(ids) {
  if (!ids.length) return t("incident.no_cases");
  const list = h("ul", { class: "cases" });
  for (const id of ids) {
    const item = h("li", {}, id);
    list.append(item);
    getJson(`/cases/${encodeURIComponent(id)}`)
      .then((c) => item.replaceChildren(`${c.title} (${c.external_ref})`))
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
