// The health page (#/health, 视频质量诊断): 完好率 (the share of time cameras were online
// with a usable picture) and the online rate of the selected grid over the last day or
// week; the same per grid right below it, as a table and as the map's colours (clicking a
// row or a grid drills down, as the tree does); and the cameras not 完好 now, with why:
// offline since when and the stream's error, or the picture's problems with the current
// snapshot beside the reference view (loaded when scrolled into view).
//
// Figures: GET /cameras/availability (totals) and /cameras/availability/grids (one query for
// every child grid); the list: GET /cameras/health, PAGE cameras a request by name.

import { api, apiError, blobUrl, getJson } from "./api.js";
import { badge, errorBox, h, show } from "./dom.js";
import { selectGrid } from "./grids.js";
import { formatTime, t } from "./i18n.js";
import { cameraLegend, legendItem, mapLegend, mapParts, startMap } from "./map.js";
import { state } from "./state.js";

/** @typedef {import("./state.js").View} View */
/** @typedef {import("./map.js").MapView} MapView */
/**
 * A grid's figures from GET /cameras/availability/grids (ratios 0..1).
 * @typedef {{grid_code: string, name: string, level: string, camera_count: number,
 *   total_ratio: number, good_ratio: number, cameras_at_or_above_98: number,
 *   cameras_good_at_or_above_98: number}} GridHealth
 */
/** @typedef {{kind: string, since: string, score: number, tamper: boolean}} Problem */
/**
 * A camera not 完好 now, from GET /cameras/health.
 * @typedef {{camera_id: string, name: string, grid_code?: string | null, state: string,
 *   since?: string | null, last_error?: string | null, quality: string,
 *   quality_since?: string | null, problems: Problem[], reference_at?: string | null}} CameraHealth
 */

const PERIODS = { "24h": 864e5, "7d": 7 * 864e5 };
const GOOD = 0.98; // 完好率 at or above: green (the usual target for a city's cameras)
const FAIR = 0.9; // at or above: amber; below: red
const PAGE = 20; // cameras a request (each with two pictures to load)
let period = "24h"; // kept while the console runs

/** @returns {View} */
export function renderHealth() {
  const abort = new AbortController();
  const map = healthMap(abort.signal);
  const figures = gridFigures(abort.signal, map.paint);
  const list = problemList();
  show(
    h("div", { class: "title-row" }, h("h1", {}, t("health.title")), periodPicker(figures.load), map.parts.selection),
    figures.summary,
    h("div", { class: "health-grids" }, figures.table, map.el),
    list.section,
  );
  figures.load();
  list.load();
  return {
    onEvent(event) {
      map.onEvent(event);
      list.onEvent(event);
    },
    cleanup() {
      abort.abort(); // disposes of the map
      list.dispose();
    },
  };
}

/** The map, its grids coloured by the table's rows once both are in.
 *  @param {AbortSignal} signal */
function healthMap(signal) {
  const parts = mapParts("health-map", t("health.map"));
  parts.box.classList.add("health-map");
  /** @type {MapView | null} */
  let view = null;
  /** @type {GridHealth[] | null} */
  let rows = null;
  const paint = () => {
    if (!view || !rows) return;
    view.paintHealth(new Map(rows.map((row) => [row.grid_code, healthLevel(row)])));
    parts.box.dataset.health = "1"; // for tests: the grids are coloured
  };
  startMap(parts, signal, { incidents: false, rerender: true }).then((started) => {
    view = started;
    parts.summary.textContent = t("health.map_hint");
    paint();
  }, () => {});
  return {
    parts,
    el: h("section", { class: "health-map-box" }, parts.box,
      h("div", { class: "map-foot" }, healthLegend(), parts.summary, parts.credit)),
    /** @param {GridHealth[]} given */
    paint(given) {
      rows = given;
      paint();
    },
    /** @param {import("./api.js").LiveEvent} event */
    onEvent: (event) => view?.onEvent(event),
  };
}

// -- Figures -------------------------------------------------------------------------------

/**
 * The selected grid's totals and the table of the grids right below it; load() reads
 * them for the period chosen and hands the rows on (to the map).
 * @param {AbortSignal} signal
 * @param {(rows: GridHealth[]) => void} onRows
 */
function gridFigures(signal, onRows) {
  const facts = h("dl", { class: "health-summary", id: "health-summary", "aria-live": "polite" });
  const tbody = h("tbody");
  const empty = h("p", { class: "hint", id: "health-grids-empty", hidden: true }, t("health.no_grids"));
  return {
    summary: h("section", { class: "card", "aria-labelledby": "health-summary-title" },
      h("h2", { id: "health-summary-title" }, state.grid?.name ?? t("grids.all")), facts),
    table: h("section", { "aria-label": t("health.per_grid") }, gridTable(tbody), empty),
    async load() {
      try {
        const [totals, rows] = await Promise.all([loadTotals(signal), loadGrids(signal)]);
        showTotals(facts, totals);
        tbody.replaceChildren(...rows.map(gridRow));
        empty.hidden = rows.length > 0;
        onRows(rows);
      } catch (err) {
        if (!signal.aborted) facts.replaceChildren(errorBox(err));
      }
    },
  };
}

/** The period select (last 24 h, 7 days); a change reloads the figures.
 *  @param {() => void} reload */
function periodPicker(reload) {
  const select = h("select", { id: "health-period" },
    Object.keys(PERIODS).map((key) => h("option", { value: key, selected: key === period }, t(`health.period.${key}`))));
  select.addEventListener("change", () => {
    period = select.value;
    reload();
  });
  return h("label", { class: "inline" }, t("health.period"), " ", select);
}

/** The figures' query: the period, and the selected grid (none: all). */
function figuresQuery() {
  const since = new Date(Date.now() - PERIODS[period]).toISOString();
  const params = new URLSearchParams({ since });
  if (state.grid) params.set("grid_code", state.grid.code);
  return params;
}

/** @param {AbortSignal} signal */
function loadTotals(signal) {
  const params = figuresQuery();
  params.set("cameras", "false");
  return getJson(`/cameras/availability?${params}`, { signal });
}

/** The grids right below the selected one (the top grids when none is).
 *  @param {AbortSignal} signal
 *  @returns {Promise<GridHealth[]>} */
async function loadGrids(signal) {
  const body = await getJson(`/cameras/availability/grids?${figuresQuery()}`, { signal });
  return body.items;
}

/**
 * @param {HTMLElement} summary
 * @param {{camera_count: number, total_ratio: number, good_ratio: number,
 *   cameras_good_at_or_above_98: number}} totals
 */
function showTotals(summary, totals) {
  const none = totals.camera_count === 0;
  /** @param {string} id @param {string} label @param {string} value */
  const fact = (id, label, value) => h("div", { class: "fact" }, h("dt", {}, label), h("dd", { id }, value));
  summary.replaceChildren(
    fact("health-good", t("health.good_ratio"), none ? "—" : percent(totals.good_ratio)),
    fact("health-online", t("health.online_ratio"), none ? "—" : percent(totals.total_ratio)),
    fact("health-count", t("health.cameras"), String(totals.camera_count)),
    fact("health-good-98", t("health.good_98"), String(totals.cameras_good_at_or_above_98)),
  );
  summary.dataset.level = none ? "none" : level(totals.good_ratio);
}

/** @param {HTMLTableSectionElement} tbody */
function gridTable(tbody) {
  const heads = ["health.grid", "health.cameras", "health.online_ratio", "health.good_ratio", "health.online_98", "health.good_98"];
  return h("table", { class: "queue health-table", id: "health-grids" },
    h("caption", { class: "sr" }, t("health.per_grid")),
    h("thead", {}, h("tr", {}, heads.map((key) => h("th", { scope: "col" }, t(key))))),
    tbody);
}

/** A grid's row; clicking it (or its name's button) selects the grid: its children show.
 *  @param {GridHealth} row */
function gridRow(row) {
  const drill = () => selectGrid(row.grid_code);
  const none = row.camera_count === 0;
  const name = h("button", { type: "button", class: "link-button" }, row.name || row.grid_code); // the keyboard's way in
  return h("tr", { dataset: { code: row.grid_code, health: healthLevel(row) }, onclick: drill },
    h("td", {}, h("span", { class: "swatch", "aria-hidden": "true" }), name),
    h("td", {}, String(row.camera_count)),
    h("td", {}, none ? "—" : percent(row.total_ratio)),
    h("td", { class: "good" }, none ? "—" : percent(row.good_ratio)),
    h("td", {}, String(row.cameras_at_or_above_98)),
    h("td", {}, String(row.cameras_good_at_or_above_98)));
}

/** "good" (≥ 98 %), "fair" (≥ 90 %), "poor", or "none" for a grid without cameras.
 *  @param {GridHealth} row */
function healthLevel(row) {
  return row.camera_count === 0 ? "none" : level(row.good_ratio);
}

/** @param {number} ratio */
function level(ratio) {
  if (ratio >= GOOD) return "good";
  return ratio >= FAIR ? "fair" : "poor";
}

/** @param {number} ratio 0..1 */
function percent(ratio) {
  return `${(ratio * 100).toFixed(1)} %`;
}

function healthLegend() {
  return mapLegend(
    legendItem("health-good", t("health.legend.good")),
    legendItem("health-fair", t("health.legend.fair")),
    legendItem("health-poor", t("health.legend.poor")),
    legendItem("health-none", t("health.legend.none")),
    cameraLegend(),
  );
}

// -- Cameras not 完好 ------------------------------------------------------------------------

/** The list of cameras not 完好, paged by next_cursor, pictures loaded when in view. */
function problemList() {
  const el = h("ul", { class: "health-list", id: "health-cameras" });
  const empty = h("p", { class: "hint", id: "health-cameras-empty", hidden: true }, t("health.all_good"));
  const more = h("button", { type: "button", class: "secondary", id: "health-more", hidden: true }, t("health.more"));
  const refresh = h("button", { type: "button", class: "secondary small", id: "health-refresh" }, t("health.refresh"));
  const note = h("span", { class: "hint", role: "status" });
  const pictures = lazyPictures();
  let cursor = null;
  let loading = false;

  /** @param {boolean} [append] */
  async function load(append = false) {
    if (loading) return;
    loading = true;
    try {
      const body = await getJson(`/cameras/health?${listQuery(append ? cursor : null)}`);
      if (!append) {
        pictures.clear();
        el.replaceChildren();
      }
      el.append(...body.items.map((item) => cameraItem(item, pictures)));
      cursor = body.next_cursor;
      more.hidden = !cursor;
      empty.hidden = el.children.length > 0;
      note.textContent = "";
    } catch (err) {
      el.replaceChildren(h("li", {}, errorBox(err)));
    } finally {
      loading = false;
    }
  }
  more.addEventListener("click", () => load(true));
  refresh.addEventListener("click", () => load());
  return {
    section: h("section", { class: "health-problems", "aria-labelledby": "health-list-title" },
      h("div", { class: "title-row" }, h("h2", { id: "health-list-title" }, t("health.list")), refresh, note),
      el, empty, more),
    load,
    /** A camera's state or picture changed: say so (reloading would lose the place). */
    onEvent(event) {
      if (/^camera\.(online|offline|degraded|restored)$/.test(event.type)) note.textContent = t("health.changed");
    },
    dispose: () => pictures.clear(),
  };
}

/** A page of the list: the selected grid's, after cursor (null: the first).
 *  @param {string | null} cursor */
function listQuery(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.grid) params.set("grid_code", state.grid.code);
  if (cursor) params.set("cursor", cursor);
  return params;
}

/**
 * @param {CameraHealth} item
 * @param {ReturnType<typeof lazyPictures>} pictures
 */
function cameraItem(item, pictures) {
  const degraded = item.state === "online" && item.quality === "degraded";
  const link = h("a", { href: `#/cameras/${encodeURIComponent(item.camera_id)}` }, item.name);
  const grid = item.grid_code ? state.grids.find((g) => g.code === item.grid_code)?.name ?? item.grid_code : null;
  const li = h("li", { class: "card health-camera", dataset: { camera: item.camera_id, kind: degraded ? "degraded" : item.state } },
    h("div", { class: "tile-bar" }, link,
      degraded ? badge("quality", "degraded", t("health.degraded")) : badge("state", item.state, t(`camera.state.${item.state}`)),
      grid ? h("span", { class: "tile-status" }, grid) : null),
    degraded ? problems(item) : notOnline(item));
  if (degraded) {
    const images = comparison(item);
    li.append(images.el, referenceButton(item.camera_id));
    pictures.watch(images.el, images.load);
  }
  return li;
}

/** Why a camera is not online: since when, and the stream's last error.
 *  @param {CameraHealth} item */
function notOnline(item) {
  const facts = h("dl", { class: "facts" });
  /** @param {string} label @param {string} value @param {string} [cls] */
  const row = (label, value, cls) => facts.append(h("dt", {}, label), h("dd", { class: cls }, value));
  if (item.since) row(t(`health.since.${item.state}`), formatTime(item.since));
  row(t("camera.last_error"), item.last_error || t("health.no_error"), "health-error");
  return facts;
}

/** The picture's problems: each kind, since when, tamper marked.
 *  @param {CameraHealth} item */
function problems(item) {
  return h("ul", { class: "health-problems-list" }, item.problems.map((p) =>
    h("li", { dataset: { kind: p.kind } },
      h("strong", {}, problemName(p.kind)), " ",
      t("health.problem_since", { time: formatTime(p.since) }),
      p.tamper ? [" ", badge("tamper", "yes", t("health.tamper"))] : null)));
}

/** A problem kind in words (a kind this console does not know yet: as the API names it).
 *  @param {string} kind */
function problemName(kind) {
  const text = t(`quality.${kind}`);
  return text === `quality.${kind}` ? kind : text;
}

/** The current snapshot beside the reference view; load() fetches both (blob: URLs).
 *  @param {CameraHealth} item */
function comparison(item) {
  const id = encodeURIComponent(item.camera_id);
  const now = picture(t("health.now"), "health-now", `/cameras/${id}/snapshot.jpg`, t("camera.no_frame"));
  const caption = item.reference_at ? t("health.reference", { time: formatTime(item.reference_at) }) : t("health.reference_none");
  const ref = item.reference_at
    ? picture(caption, "health-ref", `/cameras/${id}/quality/reference.jpg`, t("health.no_reference"))
    : { el: h("figure", {}, h("figcaption", {}, caption), h("p", { class: "hint" }, t("health.no_reference"))), load: async () => [] };
  return {
    el: h("div", { class: "health-pictures" }, now.el, ref.el),
    /** @returns {Promise<string[]>} the blob: URLs made */
    load: async () => (await Promise.all([now.load(), ref.load()])).flat(),
  };
}

/**
 * A captioned picture loaded on demand; its failure is said in words.
 * @param {string} caption
 * @param {string} cls
 * @param {string} path
 * @param {string} missing what to say when there is no picture
 */
function picture(caption, cls, path, missing) {
  const img = h("img", { class: cls, alt: caption });
  const el = h("figure", {}, h("figcaption", {}, caption), img);
  return {
    el,
    /** @returns {Promise<string[]>} */
    async load() {
      try {
        const url = await blobUrl(path);
        img.src = url;
        return [url];
      } catch {
        img.replaceWith(h("p", { class: "hint" }, missing));
        return [];
      }
    },
  };
}

/** "This is the new normal view": the camera takes its next picture as the reference.
 *  @param {string} id */
function referenceButton(id) {
  const note = h("span", { class: "hint", role: "status" });
  const button = h("button", { type: "button", class: "secondary small health-reference" }, t("health.new_reference"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const response = await api(`/cameras/${encodeURIComponent(id)}/quality/reference`, { method: "POST" });
      if (!response.ok) throw await apiError(response);
      note.textContent = t("health.reference_requested");
    } catch (err) {
      note.textContent = t("error.generic", { detail: err.message });
      button.disabled = false;
    }
  });
  return h("div", { class: "actions" }, button, note);
}

/** Load each watched element's pictures once it scrolls into view; clear() forgets them
 *  and revokes their blob: URLs (also those of loads still under way). */
function lazyPictures() {
  /** @type {Map<Element, () => Promise<string[]>>} */
  const pending = new Map();
  /** @type {string[]} */
  const urls = [];
  let generation = 0;
  /** @param {() => Promise<string[]>} load */
  const start = async (load) => {
    const mine = generation;
    const made = await load();
    if (mine === generation) urls.push(...made);
    else for (const url of made) URL.revokeObjectURL(url);
  };
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const load = entry.isIntersecting && pending.get(entry.target);
      if (!load) continue;
      pending.delete(entry.target);
      observer.unobserve(entry.target);
      start(load);
    }
  }, { rootMargin: "200px" });
  return {
    /** @param {Element} el @param {() => Promise<string[]>} load */
    watch(el, load) {
      pending.set(el, load);
      observer.observe(el);
    },
    clear() {
      generation += 1;
      for (const el of pending.keys()) observer.unobserve(el);
      pending.clear();
      for (const url of urls.splice(0)) URL.revokeObjectURL(url);
    },
  };
}
