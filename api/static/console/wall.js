// The camera wall (#/cameras): a tile per camera of the selected grid, with its state and
// a snapshot refreshed every few seconds, or live video (WebRTC) for a few tiles at once.

import { blobUrl, getJson } from "./api.js";
import { badge, h, show } from "./dom.js";
import { t } from "./i18n.js";
import { liveSessions, openLive } from "./live.js";
import { inGrid, state } from "./state.js";

/** @typedef {import("./api.js").Camera} Camera */
/** @typedef {import("./api.js").CameraStatus} CameraStatus */
/** @typedef {import("./state.js").View} View */

const MAX_LIVE_TILES = 4; // WebRTC tiles decode in the browser: keep a modest PC responsive
const SNAPSHOT_REFRESH_MS = 2000;
export const STATUS_REFRESH_MS = 4000;

/** A camera's state as a badge ("connecting" until known).
 *  @param {CameraStatus | null | undefined} st */
export function stateBadge(st) {
  const value = st?.state || "connecting";
  return badge("state", value, t(`camera.state.${value}`));
}

/** @returns {View} */
export function renderWall() {
  const cameras = [...state.cameras.values()].filter((c) => inGrid(c.grid_code));
  const grid = h("ul", { class: "wall", id: "wall" });
  const note = h("p", { class: "hint", role: "status" });
  show(
    h("div", { class: "title-row" },
      h("h1", {}, t("wall.title")),
      state.grid ? h("span", { class: "chip" }, t("queue.grid_filter", { grid: state.grid.name })) : null),
    note,
    cameras.length ? grid : h("p", { class: "hint" }, t("wall.empty")),
  );
  const tiles = cameras.map((camera) => wallTile(camera, note));
  grid.append(...tiles.map((tile) => tile.el));
  const timers = [
    setInterval(() => tiles.forEach((tile) => tile.refreshStatus()), STATUS_REFRESH_MS),
    setInterval(() => tiles.forEach((tile) => tile.refreshImage()), SNAPSHOT_REFRESH_MS),
  ];
  tiles.forEach((tile) => {
    tile.refreshStatus();
    tile.refreshImage();
  });
  return {
    onEvent(event) {
      if (event.type.startsWith("camera.")) tiles.find((x) => x.id === event.data.camera_id)?.refreshStatus();
    },
    cleanup() {
      timers.forEach(clearInterval);
      tiles.forEach((tile) => tile.dispose());
    },
  };
}

/**
 * @param {Camera} camera
 * @param {HTMLElement} note where to tell the operator why live video did not start
 */
function wallTile(camera, note) {
  const img = h("img", { alt: camera.name, hidden: true });
  const video = h("video", { muted: true, playsinline: true, autoplay: true, hidden: true, "aria-label": camera.name });
  const placeholder = h("span", { class: "placeholder" }, t("camera.no_frame"));
  const status = h("span", { class: "tile-status" });
  const toggle = h("button", { type: "button", class: "secondary small" }, t("wall.live"));
  const el = h(
    "li",
    { class: "tile", dataset: { camera: camera.id } },
    h("div", { class: "screen" }, img, video, placeholder),
    h("div", { class: "tile-bar" },
      h("a", { href: `#/cameras/${encodeURIComponent(camera.id)}` }, camera.name),
      status, toggle),
  );
  let imageUrl = null;
  /** @type {import("./live.js").LiveSession | null} */
  let live = null;
  const tile = {
    id: camera.id,
    el,
    async refreshStatus() {
      try {
        /** @type {CameraStatus} */
        const st = await getJson(`/cameras/${encodeURIComponent(camera.id)}/status`);
        status.replaceChildren(stateBadge(st), st.fps ? ` ${st.fps.toFixed(1)} fps` : "");
        el.dataset.state = st.state;
        // Why a camera shows no picture is what the operator needs to report.
        placeholder.textContent = st.state === "offline" && st.last_error ? st.last_error : t("camera.no_frame");
      } catch {
        /* keep the last status */
      }
    },
    async refreshImage() {
      if (live || document.hidden) return;
      try {
        const url = await blobUrl(`/cameras/${encodeURIComponent(camera.id)}/snapshot.jpg`);
        if (imageUrl) URL.revokeObjectURL(imageUrl);
        imageUrl = url;
        img.src = url;
        img.hidden = false;
        placeholder.hidden = true;
      } catch {
        /* no frame yet: keep the placeholder */
      }
    },
    dispose() {
      live?.close();
      if (imageUrl) URL.revokeObjectURL(imageUrl);
    },
  };
  toggle.addEventListener("click", async () => {
    if (live) {
      live.close();
      live = null;
      video.hidden = true;
      img.hidden = !imageUrl;
      toggle.textContent = t("wall.live");
      return;
    }
    if (liveSessions.size >= MAX_LIVE_TILES) {
      note.textContent = t("wall.live_limit", { n: MAX_LIVE_TILES });
      return;
    }
    try {
      live = await openLive(camera.id, video);
      video.hidden = false;
      img.hidden = true;
      placeholder.hidden = true;
      toggle.textContent = t("wall.stop");
    } catch (err) {
      note.textContent = t("camera.live_failed", { detail: err.message });
    }
  });
  return tile;
}
