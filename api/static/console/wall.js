// The camera wall (#/cameras): the cameras of the selected grid (and state) in a layout of
// 1, 4, 9 or 16 tiles (remembered in localStorage), page by page. Each tile shows its
// camera's name, state and a snapshot refreshed every few seconds, or live video (WebRTC,
// reconnecting by itself after drops) for a few tiles at once.
//
// A city has 20 000 cameras: the wall reads GET /cameras by name, filtered by the server
// (grid subtree, state), CHUNK cameras a request, and asks for the next chunk (next_cursor)
// only when the operator pages beyond what it has read. The number of pages is shown once
// the last chunk is in.

import { blobUrl, getJson } from "./api.js";
import { badge, h, show } from "./dom.js";
import { selectGrid } from "./grids.js";
import { t } from "./i18n.js";
import { LiveView, liveText } from "./live.js";
import { route, state } from "./state.js";

/** @typedef {import("./api.js").Camera} Camera */
/** @typedef {import("./api.js").CameraStatus} CameraStatus */
/** @typedef {import("./state.js").View} View */

const MAX_LIVE_TILES = 4; // WebRTC tiles decode in the browser: keep a modest PC responsive
const SNAPSHOT_REFRESH_MS = 2000;
export const STATUS_REFRESH_MS = 4000;
const LAYOUTS = [1, 2, 3, 4]; // tiles per side: 1×1, 2×2, 3×3, 4×4
const LAYOUT_KEY = "xl.wall.layout"; // tiles per side (not a secret: localStorage)
const LIVE_KEY = "xl.wall.live"; // "1": the page's first tiles play live by themselves
const CHUNK = 100; // cameras read per request (GET /cameras?limit=)
const STATES = ["online", "offline", "connecting", "disabled"];
let page = 0; // the wall's page, kept while the console runs
let stateFilter = ""; // the state shown ("": any), kept while the console runs
let shownFilter = ""; // the filter the page number belongs to: another starts at page 1

/** @typedef {ReturnType<typeof wallTile>} Tile */

/** The remembered layout (tiles per side), 2×2 by default. */
function savedSide() {
  const side = Number(localStorage.getItem(LAYOUT_KEY));
  return LAYOUTS.includes(side) ? side : 2;
}

/** A camera's state as a badge ("connecting" until known).
 *  @param {CameraStatus | null | undefined} st */
export function stateBadge(st) {
  const value = st?.state || "connecting";
  return badge("state", value, t(`camera.state.${value}`));
}

/**
 * The cameras of a filter read so far, by name, and how to read more.
 * @param {Record<string, string>} filter GET /cameras parameters (grid_code, state)
 */
function cameraList(filter) {
  /** @type {Camera[]} */
  const items = [];
  let cursor = null;
  let done = false;
  return {
    items,
    get done() {
      return done;
    },
    /** Read chunks until there are n cameras, or all there are. @param {number} n */
    async ensure(n) {
      while (!done && items.length < n) {
        const limit = Math.min(1000, Math.max(CHUNK, n - items.length));
        const params = new URLSearchParams({ ...filter, order: "name", limit: String(limit) });
        if (cursor) params.set("cursor", cursor);
        const body = await getJson(`/cameras?${params}`);
        items.push(...body.items);
        for (const camera of body.items) state.cameras.set(camera.id, { ...state.cameras.get(camera.id), ...camera });
        cursor = body.next_cursor;
        done = !cursor;
      }
    },
  };
}

/** @returns {View} */
export function renderWall() {
  let side = savedSide();
  let liveAll = localStorage.getItem(LIVE_KEY) === "1";
  const grid = h("ul", { class: "wall", id: "wall" });
  const note = h("p", { class: "hint", role: "status" });
  const limitNote = h("p", { class: "hint", id: "wall-limit" });
  const empty = h("p", { class: "hint", id: "wall-empty", hidden: true });
  const bar = wallBar(side, liveAll);
  show(
    h("div", { class: "title-row" },
      h("h1", {}, t("wall.title")),
      state.grid ? h("span", { class: "chip" }, t("queue.grid_filter", { grid: state.grid.name })) : null),
    wallFilters(),
    bar.el,
    note,
    limitNote,
    empty,
    grid,
  );
  /** @type {Record<string, string>} */
  const filter = {};
  if (state.grid) filter.grid_code = state.grid.code;
  if (stateFilter) filter.state = stateFilter;
  if (JSON.stringify(filter) !== shownFilter) page = 0;
  shownFilter = JSON.stringify(filter);
  const cameras = cameraList(filter);
  /** @type {Tile[]} */
  let tiles = [];
  let shown = 0; // renders started: an older one that finishes late is dropped
  let gone = false;
  const liveTiles = () => tiles.filter((tile) => tile.live).length;

  async function renderPage() {
    const mine = ++shown;
    const perPage = side * side;
    try {
      await cameras.ensure((page + 1) * perPage + 1); // one more: is there a next page?
    } catch (err) {
      note.textContent = t("error.generic", { detail: err.message });
    }
    if (mine !== shown || gone) return;
    const pages = Math.max(1, Math.ceil(cameras.items.length / perPage));
    page = Math.min(page, pages - 1);
    tiles.forEach((tile) => tile.dispose());
    tiles = cameras.items
      .slice(page * perPage, (page + 1) * perPage)
      .map((camera) => wallTile(camera, note, () => liveTiles() < MAX_LIVE_TILES));
    grid.dataset.layout = String(side);
    grid.replaceChildren(...tiles.map((tile) => tile.el));
    empty.hidden = cameras.items.length > 0;
    empty.textContent = t(filter.grid_code || filter.state ? "wall.none_match" : "wall.empty");
    bar.el.hidden = cameras.items.length === 0;
    bar.showPage(page, cameras.done ? pages : null);
    limitNote.textContent =
      perPage > MAX_LIVE_TILES ? t("wall.live_note", { n: MAX_LIVE_TILES, s: SNAPSHOT_REFRESH_MS / 1000 }) : "";
    note.textContent = "";
    if (liveAll) tiles.slice(0, MAX_LIVE_TILES).forEach((tile) => tile.startLive());
    tiles.forEach((tile) => {
      tile.refreshStatus();
      tile.refreshImage();
    });
  }
  bar.onLayout((next) => {
    page = Math.floor((page * side * side) / (next * next)); // keep the first tile in view
    side = next;
    localStorage.setItem(LAYOUT_KEY, String(side));
    renderPage();
  });
  bar.onPage((delta) => {
    page = Math.max(0, page + delta);
    renderPage();
  });
  bar.onLive((on) => {
    liveAll = on;
    localStorage.setItem(LIVE_KEY, on ? "1" : "0");
    if (!on) tiles.forEach((tile) => tile.stopLive());
    else tiles.filter((tile) => !tile.live).slice(0, MAX_LIVE_TILES - liveTiles()).forEach((tile) => tile.startLive());
  });
  renderPage();
  const timers = [
    setInterval(() => tiles.forEach((tile) => tile.refreshStatus()), STATUS_REFRESH_MS),
    setInterval(() => tiles.forEach((tile) => tile.refreshImage()), SNAPSHOT_REFRESH_MS),
  ];
  return {
    onEvent(event) {
      if (event.type.startsWith("camera.")) tiles.find((x) => x.id === event.data.camera_id)?.refreshStatus();
    },
    cleanup() {
      gone = true;
      timers.forEach(clearInterval);
      tiles.forEach((tile) => tile.dispose());
    },
  };
}

/** The wall's filters: the grid (the tree's selection, GET /grids) and the cameras' state.
 *  Either re-renders the wall, which starts again at its first page for another filter. */
function wallFilters() {
  const grids = h(
    "select",
    { id: "wall-grid", onchange: () => selectGrid(grids.value || null) },
    h("option", { value: "" }, t("grids.all")),
    state.grids.map((g) => h("option", { value: g.code, selected: state.grid?.code === g.code }, g.name || g.code)),
  );
  const states = h(
    "select",
    { id: "wall-state", onchange: () => {
      stateFilter = states.value;
      route();
    } },
    h("option", { value: "" }, t("wall.any_state")),
    STATES.map((s) => h("option", { value: s, selected: stateFilter === s }, t(`camera.state.${s}`))),
  );
  return h("form", { class: "filters wall-filters", onsubmit: (e) => e.preventDefault() },
    state.gridsAvailable ? h("label", {}, t("wall.grid"), " ", grids) : null,
    h("label", {}, t("wall.state"), " ", states));
}

/**
 * The wall's tool bar: the layout picker, live video for the page, and the pager.
 * @param {number} side tiles per side now
 * @param {boolean} liveAll
 */
function wallBar(side, liveAll) {
  const layouts = LAYOUTS.map((n) =>
    h("button", {
      type: "button",
      class: "secondary small",
      "aria-pressed": String(n === side),
      "aria-label": t("wall.layout_n", { n }),
      title: t("wall.layout_n", { n }),
      dataset: { layout: String(n) },
    }, `${n * n}`));
  const live = h("button", { type: "button", class: "secondary small", id: "wall-live", "aria-pressed": String(liveAll) }, t("wall.live_all"));
  const prev = h("button", { type: "button", class: "secondary small", id: "wall-prev", "aria-label": t("wall.prev"), title: t("wall.prev") }, "‹");
  const next = h("button", { type: "button", class: "secondary small", id: "wall-next", "aria-label": t("wall.next"), title: t("wall.next") }, "›");
  const label = h("span", { id: "wall-page", "aria-live": "polite" });
  const pager = h("div", { class: "pager" }, prev, label, next);
  const el = h("div", { class: "wall-bar" },
    h("div", { class: "layouts", role: "group", "aria-label": t("wall.layout") }, h("span", { class: "hint" }, t("wall.layout")), layouts),
    live,
    pager);
  return {
    el,
    /** @param {number} index @param {number | null} pages null: more than read so far */
    showPage(index, pages) {
      label.textContent = pages === null ? t("wall.page_open", { page: index + 1 }) : t("wall.page", { page: index + 1, pages });
      prev.disabled = index === 0;
      next.disabled = pages !== null && index >= pages - 1;
      pager.hidden = pages === 1;
    },
    /** @param {(side: number) => void} handle */
    onLayout(handle) {
      for (const button of layouts) {
        button.addEventListener("click", () => {
          layouts.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
          handle(Number(button.dataset.layout));
        });
      }
    },
    /** @param {(delta: number) => void} handle */
    onPage(handle) {
      prev.addEventListener("click", () => handle(-1));
      next.addEventListener("click", () => handle(1));
    },
    /** @param {(on: boolean) => void} handle */
    onLive(handle) {
      live.addEventListener("click", () => {
        const on = live.getAttribute("aria-pressed") !== "true";
        live.setAttribute("aria-pressed", String(on));
        handle(on);
      });
    },
  };
}

/**
 * @param {Camera} camera
 * @param {HTMLElement} note where to tell the operator why live video did not start
 * @param {() => boolean} mayGoLive whether another tile may play live now
 */
function wallTile(camera, note, mayGoLive) {
  const img = h("img", { alt: camera.name, hidden: true });
  const video = h("video", { muted: true, playsinline: true, autoplay: true, hidden: true, "aria-label": camera.name });
  const placeholder = h("span", { class: "placeholder" }, t("camera.no_frame"));
  const liveLabel = h("span", { class: "live-label", hidden: true });
  const status = h("span", { class: "tile-status" });
  const toggle = h("button", { type: "button", class: "secondary small" }, t("wall.live"));
  const el = h(
    "li",
    { class: "tile", dataset: { camera: camera.id, live: "off" } },
    // The picture lies over the video until frames play (and whenever the view drops).
    h("div", { class: "screen" }, video, img, placeholder, liveLabel),
    h("div", { class: "tile-bar" },
      h("a", { href: `#/cameras/${encodeURIComponent(camera.id)}` }, camera.name),
      status, toggle),
  );
  let imageUrl = null;
  const view = new LiveView(camera.id, video, paint);

  /** Show the live view's state: video while it plays, else the latest picture. */
  function paint() {
    const playing = view.state === "playing";
    el.dataset.live = view.state;
    el.dataset.reconnects = String(view.reconnects);
    video.hidden = !view.active;
    img.hidden = playing || !imageUrl;
    placeholder.hidden = playing || Boolean(imageUrl);
    liveLabel.hidden = view.state === "off";
    liveLabel.textContent = playing ? t("liveview.playing") : liveText(view);
    toggle.textContent = t(view.active ? "wall.stop" : "wall.live");
  }

  const tile = {
    id: camera.id,
    el,
    get live() {
      return view.active;
    },
    startLive() {
      view.start();
    },
    stopLive() {
      view.stop();
    },
    async refreshStatus() {
      try {
        /** @type {CameraStatus} */
        const st = await getJson(`/cameras/${encodeURIComponent(camera.id)}/status`);
        status.replaceChildren(stateBadge(st), st.fps ? ` ${st.fps.toFixed(1)} fps` : "");
        el.dataset.state = st.state;
        // Why a camera shows no picture is what the operator needs to report.
        placeholder.textContent = st.state === "offline" && st.last_error ? st.last_error : t("camera.no_frame");
        view.cameraState(st.state);
      } catch {
        /* keep the last status */
      }
    },
    async refreshImage() {
      if (view.state === "playing" || document.hidden) return;
      try {
        const url = await blobUrl(`/cameras/${encodeURIComponent(camera.id)}/snapshot.jpg`);
        if (imageUrl) URL.revokeObjectURL(imageUrl);
        imageUrl = url;
        img.src = url;
        paint();
      } catch {
        /* no frame yet: keep the placeholder */
      }
    },
    dispose() {
      view.stop();
      if (imageUrl) URL.revokeObjectURL(imageUrl);
    },
  };
  toggle.addEventListener("click", () => {
    if (view.active) view.stop();
    else if (!mayGoLive()) note.textContent = t("wall.live_limit", { n: MAX_LIVE_TILES });
    else {
      note.textContent = "";
      view.start();
    }
  });
  return tile;
}
