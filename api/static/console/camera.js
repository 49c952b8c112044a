// The camera page (#/cameras/{id}): live video (WebRTC, reconnecting by itself while the
// camera is unavailable), PTZ controls for a camera that has them, the camera's status and
// availability, and its recent incidents.

import { getJson } from "./api.js";
import { badge, errorBox, h, show } from "./dom.js";
import { formatTime, t } from "./i18n.js";
import { LiveView, liveText } from "./live.js";
import { ptzControls } from "./ptz.js";
import { state } from "./state.js";
import { STATUS_REFRESH_MS, stateBadge } from "./wall.js";

/** @typedef {import("./api.js").CameraStatus} CameraStatus */
/** @typedef {import("./state.js").View} View */

/**
 * @param {string} id
 * @returns {View}
 */
export function renderCamera(id) {
  const camera = state.cameras.get(id); // unknown when not on a page listed yet: read below
  const video = h("video", { id: "live", muted: true, playsinline: true, autoplay: true, controls: false, "aria-label": t("camera.live") });
  const liveNote = h("p", { class: "hint", role: "status" });
  const button = h("button", { type: "button", class: "secondary" }, t("camera.live_stop"));
  const facts = h("dl", { class: "facts", id: "camera-status" });
  const recent = h("ul", { class: "recent" });
  const title = h("h1", {}, camera?.name ?? id);
  const controls = h("div", { class: "actions" }, button);
  show(
    h("p", {}, h("a", { href: "#/cameras" }, "← " + t("camera.back"))),
    title,
    h("div", { class: "incident" },
      h("section", { class: "media", "aria-label": t("camera.live") }, h("div", { class: "screen big" }, video), controls, liveNote),
      h("div", { class: "side-col" },
        h("section", { class: "card" }, h("h2", {}, t("camera.status")), facts),
        h("section", { class: "card" }, h("h2", {}, t("camera.recent")), recent))),
  );
  const live = new LiveView(id, video, (view) => {
    liveNote.textContent = liveText(view);
    video.dataset.live = view.state;
    button.textContent = t(view.active ? "camera.live_stop" : "camera.live_start");
  });
  button.addEventListener("click", () => (live.active ? live.stop() : live.start()));
  /** @type {ReturnType<typeof ptzControls> | null} */
  let ptz = null;
  let gone = false;
  async function loadPtz() {
    try {
      const found = await getJson(`/cameras/${encodeURIComponent(id)}`);
      if (!state.cameras.has(id)) state.cameras.set(id, found);
      title.textContent = found.name;
      if (!found.ptz || gone) return;
      ptz = ptzControls(id);
      controls.after(ptz.el);
    } catch {
      /* no PTZ shown */
    }
  }

  async function refreshStatus() {
    try {
      // Over the last 24 h, or since the camera was added when that is more recent.
      const added = Date.parse(state.cameras.get(id)?.created_at ?? "") || 0;
      const since = new Date(Math.max(added, Date.now() - 864e5)).toISOString();
      /** @type {[CameraStatus, any]} */
      const [st, availability] = await Promise.all([
        getJson(`/cameras/${encodeURIComponent(id)}/status`),
        getJson(`/cameras/availability?since=${encodeURIComponent(since)}`).catch(() => null),
      ]);
      live.cameraState(st.state);
      const ratio = availability?.cameras?.find((c) => c.camera_id === id)?.ratio;
      /** @param {string} label @param {string | Node} value */
      const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
      facts.replaceChildren(
        ...row(t("camera.status"), stateBadge(st)),
        ...row(t("camera.fps"), st.fps ? st.fps.toFixed(1) : "—"),
        ...row(t("camera.last_frame"), st.last_frame_at ? formatTime(st.last_frame_at) : "—"),
        ...row(t("camera.reconnects"), String(st.reconnects ?? 0)),
        ...row(
          t("camera.availability"),
          ratio != null ? `${(ratio * 100).toFixed(1)} % (${t("camera.since", { time: formatTime(since) })})` : "—",
        ),
        ...(st.last_error ? row(t("camera.last_error"), st.last_error) : []),
      );
    } catch (err) {
      facts.replaceChildren(errorBox(err));
    }
  }
  async function loadRecent() {
    try {
      const page = await getJson(`/incidents?camera_id=${encodeURIComponent(id)}&limit=10`);
      recent.replaceChildren(
        ...page.items.map((i) =>
          h("li", {}, h("a", { href: `#/incidents/${encodeURIComponent(i.id)}` }, formatTime(i.started_at)), " ",
            badge("status", i.status, t(`status.${i.status}`)))),
      );
    } catch {
      /* optional */
    }
  }
  live.start();
  loadPtz();
  refreshStatus();
  loadRecent();
  const timer = setInterval(refreshStatus, STATUS_REFRESH_MS);
  return {
    onEvent(event) {
      if (event.data?.camera_id !== id) return;
      if (event.type.startsWith("camera.")) refreshStatus();
      else if (event.type.startsWith("incident.")) loadRecent();
    },
    cleanup() {
      gone = true;
      clearInterval(timer);
      live.stop();
      ptz?.stop();
    },
  };
}
