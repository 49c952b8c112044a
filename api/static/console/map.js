// The city map (#/map): grid boundaries drawn nested (city → county → town → community →
// grid, the finer on top), cameras as markers coloured by state, open incidents as pins at
// their camera. Clicking a grid selects it as the tree does (the queue and the wall follow);
// clicking a camera opens its page. Base tiles are optional (console.map_tiles_url, read
// from config.json): without them everything is drawn on a plain background, fitted to the
// grids. The health page (health.js) draws the same map (startMap) without incident pins,
// its grids coloured by 完好率 (paintHealth), picking a grid drilling down.
//
// Leaflet (vendor/leaflet, BSD-2-Clause) is loaded on first use. It gets elements, never
// strings, for tooltips and popups (it would parse a string as HTML: grid names are
// imported data), and the look is map.css's, by classes and data attributes on the SVG
// paths and marker elements. Requests stay bounded for a city: grids are paged and kept a
// minute (picking in the tree re-renders the map), open incidents are read a few pages at
// most, cameras are read 1000 a page, and camera statuses (the API has no batch read) only for cameras in view, a few at
// a time, every few seconds; live events update both in between.

import { getJson } from "./api.js";
import { badge, errorBox, h, show } from "./dom.js";
import { selectGrid } from "./grids.js";
import { formatTime, t } from "./i18n.js";
import { state } from "./state.js";

/** @typedef {import("./api.js").Camera & {location?: {lat: number, lon: number} | null}} MapCamera */
/** @typedef {MapCamera & {location: {lat: number, lon: number}}} PlacedCamera */
/** @typedef {import("./api.js").Incident} Incident */
/** @typedef {import("./api.js").LiveEvent} LiveEvent */
/** @typedef {import("./state.js").View} View */
/**
 * A grid with its level and boundary (GeoJSON Polygon or MultiPolygon).
 * @typedef {import("./api.js").Grid & {level?: string, boundary?: {type: string, coordinates: any} | null}} MapGrid
 */
/** @typedef {{tiles: {url: string, subdomains: string} | null, attribution: string | null}} MapConfig */
/** @typedef {{grids: MapGrid[], cameras: MapCamera[], token: string | null, at: number}} Loaded */
/**
 * What a map shows besides grids and cameras. incidents: the open incidents' pins (and
 * their count in the summary), true by default; rerender: picking a grid re-renders the
 * view (the health page drills down), false by default (the map only highlights it).
 * @typedef {{incidents?: boolean, rerender?: boolean}} MapOptions
 */
/** @typedef {{marker: L.Marker, count: HTMLElement}} Pin */

export const LEVELS = ["city", "county", "town", "community", "grid"];
const CAMERA_STATES = ["online", "connecting", "offline", "disabled", "unknown"];
const OPEN = ["new", "acknowledged"]; // the incidents pinned: not yet resolved or dismissed
const GRID_PAGE = 500;
const MAX_GRID_PAGES = 40; // 20 000 grids: a large city's, with room
const CAMERA_PAGE = 1000; // the most GET /cameras gives at once
const MAX_CAMERA_PAGES = 40; // 40 000 cameras: a city's 20 000, with room
const INCIDENT_PAGE = 500;
const MAX_INCIDENT_PAGES = 2; // per status: the newest 1000 new and 1000 acknowledged
const CACHE_MS = 60_000; // grids and cameras, across re-renders of the map
const STATUS_PER_PASS = 40; // camera statuses read per pass at most (those in view only)
const STATUS_PARALLEL = 4;
const STATUS_PASS_MS = 10_000;
const STATUS_FRESH_MS = 30_000; // a status this recent is not read again (events keep it)
const PIN_LIST = 8; // incidents listed in a pin's popup
const CHINA = /** @type {L.LatLngTuple} */ ([35, 104]); // the view when there is nothing to fit

/** @type {Promise<typeof L> | null} */
let leafletLoad = null;
/** @type {Promise<MapConfig> | null} */
let configLoad = null;
/** @type {Loaded | null} */
let loaded = null;
/** The last view of the map, restored when it is drawn again for the same selection.
 *  @type {{center: L.LatLng, zoom: number, grid: string | null} | null} */
let lastView = null;

/** @returns {View} */
export function renderMap() {
  const parts = mapParts("map", t("map.title"));
  show(
    h("div", { class: "title-row" }, h("h1", {}, t("map.title")), parts.selection),
    parts.box,
    h("div", { class: "map-foot" }, legend(), parts.summary, parts.credit),
  );
  const abort = new AbortController();
  /** @type {MapView | null} */
  let view = null;
  startMap(parts, abort.signal).then((started) => (view = started), () => {});
  return {
    onEvent: (event) => view?.onEvent(event),
    cleanup: () => abort.abort(), // disposes of the map
  };
}

/**
 * The elements a map is drawn in (ids: id, id-selection, id-summary), for the page to place.
 * @param {string} id
 * @param {string} label the map's accessible name
 * @returns {Parts}
 */
export function mapParts(id, label) {
  return {
    box: h("div", { class: "map", id, role: "region", "aria-label": label, dataset: { ready: "0" } }),
    selection: h("div", { class: "map-selection", id: `${id}-selection` }),
    summary: h("p", { class: "hint", id: `${id}-summary` }, t("map.loading")),
    credit: h("p", { class: "hint map-credit", hidden: true }),
  };
}

/**
 * Load and draw a map into parts.box; an error replaces parts.summary. Aborting the signal
 * disposes of it (also when it aborts while loading); the promise then rejects.
 * @param {Parts} parts
 * @param {AbortSignal} signal
 * @param {MapOptions} [options]
 * @returns {Promise<MapView>}
 */
export async function startMap(parts, signal, options = {}) {
  try {
    const [leaflet, config, data, open] = await Promise.all([
      loadLeaflet(),
      loadConfig(),
      loadData(signal),
      options.incidents === false ? { items: [], capped: false } : loadOpenIncidents(signal),
    ]);
    signal.throwIfAborted();
    const view = new MapView(leaflet, parts, config, data, open, signal, options);
    signal.addEventListener("abort", () => view.dispose());
    return view;
  } catch (err) {
    if (!signal.aborted) parts.summary.replaceWith(errorBox(err));
    throw err;
  }
}

/** @typedef {{box: HTMLElement, selection: HTMLElement, summary: HTMLElement, credit: HTMLElement}} Parts */

// -- Loading -----------------------------------------------------------------------------

/** Leaflet, from vendor/leaflet/leaflet.js the first time (a classic script: window.L).
 *  @returns {Promise<typeof L>} */
function loadLeaflet() {
  leafletLoad ??= new Promise((resolve, reject) => {
    const failed = () => {
      leafletLoad = null;
      reject(new Error("vendor/leaflet/leaflet.js did not load"));
    };
    const onload = () => (window.L ? resolve(window.L) : failed());
    document.head.append(h("script", { src: "vendor/leaflet/leaflet.js", onload, onerror: failed }));
  });
  return leafletLoad;
}

/** The console's settings (GET /console/config.json, public): the map's base tiles.
 *  @returns {Promise<MapConfig>} */
function loadConfig() {
  configLoad ??= fetch("config.json", { cache: "no-cache" })
    .then((response) => (response.ok ? response.json() : {}))
    .then((/** @type {{map?: Partial<MapConfig>}} */ body) => ({ tiles: body.map?.tiles ?? null, attribution: body.map?.attribution ?? null }))
    .catch(() => {
      configLoad = null; // try again next time; draw without tiles now
      return { tiles: null, attribution: null };
    });
  return configLoad;
}

/** Every grid with its boundary, and the cameras (kept CACHE_MS for this token).
 *  @param {AbortSignal} signal
 *  @returns {Promise<Loaded>} */
async function loadData(signal) {
  if (loaded?.token === state.token && Date.now() - loaded.at < CACHE_MS) return loaded;
  const grids = collect("/grids", { boundary: "true", limit: String(GRID_PAGE) }, MAX_GRID_PAGES, signal)
    .then((result) => result.items)
    .catch((err) => (err.status === 404 || err.status === 501 ? [] : Promise.reject(err))); // no grids API here
  const cameras = collect("/cameras", { limit: String(CAMERA_PAGE) }, MAX_CAMERA_PAGES, signal).then((result) => {
    for (const camera of result.items) if (!state.cameras.has(camera.id)) state.cameras.set(camera.id, camera);
    return result.items;
  });
  loaded = { grids: await grids, cameras: await cameras, token: state.token, at: Date.now() };
  return loaded;
}

/** The open incidents, newest first: a few pages of each status at most.
 *  @param {AbortSignal} signal */
async function loadOpenIncidents(signal) {
  const query = (status) => ({ status, limit: String(INCIDENT_PAGE) });
  const pages = await Promise.all(OPEN.map((s) => collect("/incidents", query(s), MAX_INCIDENT_PAGES, signal)));
  return { items: pages.flatMap((p) => p.items), capped: pages.some((p) => p.more) };
}

/**
 * Follow next_cursor through at most maxPages pages of a list.
 * @param {string} path
 * @param {Record<string, string>} query
 * @param {number} maxPages
 * @param {AbortSignal} signal
 * @returns {Promise<{items: any[], more: boolean}>}
 */
async function collect(path, query, maxPages, signal) {
  const params = new URLSearchParams(query);
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page++) {
    if (cursor) params.set("cursor", cursor);
    const body = await getJson(`${path}?${params}`, { signal });
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return { items, more: Boolean(cursor) };
}

// -- The map -----------------------------------------------------------------------------

export class MapView {
  /**
   * @param {typeof L} leaflet
   * @param {Parts} parts
   * @param {MapConfig} config
   * @param {Loaded} data
   * @param {{items: Incident[], capped: boolean}} open
   * @param {AbortSignal} signal
   * @param {MapOptions} options
   */
  constructor(leaflet, parts, config, data, open, signal, options) {
    this.L = leaflet;
    this.parts = parts;
    this.options = options;
    this.grids = data.grids;
    this.signal = signal;
    this.capped = open.capped;
    /** @type {Map<string, PlacedCamera>} */
    this.cameras = new Map(data.cameras.filter(hasLocation).map((c) => [c.id, c]));
    this.unplaced = data.cameras.length - this.cameras.size;
    /** @type {Map<string, {state: string, at: number}>} */
    this.statuses = new Map();
    /** @type {Map<string, Map<string, Incident>>} camera id → its open incidents by id */
    this.open = new Map();
    /** @type {Map<string, Pin>} */
    this.pins = new Map();
    /** @type {Map<string, L.Polygon>} */
    this.polygons = new Map();
    /** @type {Map<string, L.Marker>} */
    this.markers = new Map();
    this.polling = false;
    this.map = this.L.map(parts.box, { attributionControl: false, zoomSnap: 0.25, maxZoom: config.tiles ? 18 : 20 });
    this.draw(config, open.items);
  }

  /**
   * Draw what was loaded, fit the view, then follow the cameras' states.
   * @param {MapConfig} config
   * @param {Incident[]} incidents
   */
  draw(config, incidents) {
    this.map.setView(CHINA, 4, { animate: false }); // layers are added once the map has a view
    for (const pane of [...LEVELS.map((level) => `level-${level}`), "pins"]) this.map.createPane(pane); // stacked by map.css
    this.drawGrids();
    this.drawCameras();
    for (const incident of incidents) this.keepIncident(incident);
    for (const id of this.open.keys()) this.paintPin(id);
    this.fit();
    this.tiles(config); // after fit(): no tiles fetched for the provisional view
    this.highlight();
    this.showSummary();
    this.startPolling();
    this.parts.box.dataset.ready = "1"; // for tests: everything loaded is drawn
  }

  /** @param {MapConfig} config */
  tiles(config) {
    if (!config.tiles) return;
    this.L.tileLayer(config.tiles.url, { subdomains: config.tiles.subdomains, maxZoom: 18 }).addTo(this.map);
    this.parts.box.dataset.tiles = "1";
    if (!config.attribution) return;
    this.parts.credit.textContent = t("map.tiles", { attribution: config.attribution });
    this.parts.credit.hidden = false;
  }

  /** The grids with a boundary, each level in its own pane (finer levels on top). */
  drawGrids() {
    for (const grid of this.grids) {
      const rings = latLngs(grid.boundary);
      if (!rings) continue;
      const level = LEVELS.includes(grid.level) ? grid.level : "grid";
      const polygon = this.L.polygon(rings, { pane: `level-${level}`, className: `map-grid level-${level}` })
        .bindTooltip(h("span", {}, grid.name || grid.code), { sticky: true })
        .on("click", () => this.pick(grid.code))
        .addTo(this.map);
      Object.assign(polygon.getElement().dataset, { gridCode: grid.code, level });
      this.polygons.set(grid.code, polygon);
    }
  }

  drawCameras() {
    for (const camera of this.cameras.values()) {
      const open = () => (location.hash = `#/cameras/${encodeURIComponent(camera.id)}`);
      const icon = this.L.divIcon({ className: "map-camera", iconSize: [18, 18] });
      const marker = this.L.marker(at(camera), { icon, riseOnHover: true })
        .on("click", open)
        .on("keypress", (e) => e.originalEvent?.key === "Enter" && open())
        .addTo(this.map);
      marker.getElement().dataset.cameraId = camera.id;
      this.markers.set(camera.id, marker);
      this.paintCamera(camera.id, state.cameras.get(camera.id)?.state ?? "unknown");
    }
  }

  /**
   * @param {string} id
   * @param {string} value the camera's state
   */
  paintCamera(id, value) {
    const el = this.markers.get(id)?.getElement();
    if (!el) return;
    const label = t("map.camera_label", { camera: this.cameras.get(id).name, state: stateText(value) });
    el.dataset.state = CAMERA_STATES.includes(value) ? value : "unknown";
    el.setAttribute("aria-label", label);
    el.setAttribute("title", label);
  }

  /** The selected grid if drawn, else where the operator left the map, else everything. */
  fit() {
    const code = state.grid?.code ?? null;
    if (lastView && lastView.grid === code) this.map.setView(lastView.center, lastView.zoom, { animate: false });
    else this.fitTo(this.polygons.get(code)?.getBounds() ?? this.bounds());
    this.map.on("moveend", () => {
      lastView = { center: this.map.getCenter(), zoom: this.map.getZoom(), grid: state.grid?.code ?? null };
      this.pollSoon();
    });
  }

  /** @param {L.LatLngBounds} bounds */
  fitTo(bounds) {
    if (bounds.isValid()) this.map.fitBounds(bounds, { padding: [20, 20], animate: false });
    else this.map.setView(CHINA, 4, { animate: false });
  }

  /** The bounds of every grid drawn, or of the cameras when there is none. */
  bounds() {
    const all = this.L.latLngBounds([]);
    for (const polygon of this.polygons.values()) all.extend(polygon.getBounds());
    if (!all.isValid()) for (const camera of this.cameras.values()) all.extend(at(camera));
    return all;
  }

  /** Select a grid (null: all) for the queue and the wall, as the tree does; stay here,
   *  or (options.rerender) render the view again for it, once Leaflet's click is handled.
   *  @param {string | null} code */
  pick(code) {
    if (this.options.rerender) {
      setTimeout(() => selectGrid(code, true, this.grids));
      return;
    }
    selectGrid(code, false, this.grids);
    this.highlight();
  }

  /** No grid selected, the whole city in view. */
  showAll() {
    this.pick(null);
    if (!this.options.rerender) this.fitTo(this.bounds());
  }

  /**
   * Colour grids by health (health.js): data-health on their paths (map.css colours it),
   * removed from every grid not in levels.
   * @param {Map<string, string>} levels grid code → "good" | "fair" | "poor" | "none"
   */
  paintHealth(levels) {
    for (const [code, polygon] of this.polygons) {
      const el = polygon.getElement();
      if (levels.has(code)) el.dataset.health = levels.get(code);
      else delete el.dataset.health;
    }
  }

  highlight() {
    const code = state.grid?.code ?? null;
    for (const [key, polygon] of this.polygons) {
      polygon.getElement().classList.toggle("selected", key === code);
      if (key === code) polygon.bringToFront();
    }
    const bar = this.parts.selection;
    if (!state.grid) return bar.replaceChildren();
    bar.replaceChildren(
      h("span", { class: "chip" }, t("queue.grid_filter", { grid: state.grid.name })),
      h("a", { href: "#/incidents" }, t("map.show_incidents")),
      h("a", { href: "#/cameras" }, t("map.show_wall")),
      h("button", { type: "button", class: "secondary small", onclick: () => this.showAll() }, t("map.clear")),
    );
  }

  showSummary() {
    if (this.options.incidents === false) return; // the page says what the map shows
    const open = [...this.open.values()].reduce((n, incidents) => n + incidents.size, 0);
    const text = t("map.summary", { placed: this.cameras.size, unplaced: this.unplaced, open });
    this.parts.summary.textContent = this.capped ? `${text} (${t("map.capped")})` : text;
  }

  // -- Incidents ---------------------------------------------------------------------------

  /** Keep an open incident for its camera's pin, or drop one that is not open any more.
   *  @param {Incident} incident (or an incident.* event's summary) */
  keepIncident(incident) {
    const incidents = this.open.get(incident.camera_id) ?? new Map();
    if (OPEN.includes(incident.status)) incidents.set(incident.id, { ...incidents.get(incident.id), ...incident });
    else incidents.delete(incident.id);
    this.open.set(incident.camera_id, incidents);
  }

  /** Show, update or remove a camera's pin (its number of open incidents).
   *  @param {string} cameraId */
  paintPin(cameraId) {
    const count = this.open.get(cameraId)?.size ?? 0;
    const camera = this.cameras.get(cameraId);
    let pin = this.pins.get(cameraId);
    if (!count || !camera) {
      pin?.marker.remove();
      this.pins.delete(cameraId);
      return;
    }
    pin ??= this.newPin(camera);
    pin.count.textContent = String(count);
    const el = pin.marker.getElement();
    el.dataset.count = String(count);
    el.setAttribute("aria-label", t("map.pin_label", { n: count, camera: camera.name }));
  }

  /** @param {PlacedCamera} camera */
  newPin(camera) {
    const count = h("span", { class: "count" });
    const icon = this.L.divIcon({ className: "map-pin", html: count, iconSize: [24, 24], iconAnchor: [-3, 27] });
    const marker = this.L.marker(at(camera), { icon, pane: "pins" })
      .bindPopup(() => this.pinPopup(camera), { className: "map-popup", maxWidth: 320 })
      .addTo(this.map);
    marker.getElement().dataset.pinCamera = camera.id;
    const pin = { marker, count };
    this.pins.set(camera.id, pin);
    return pin;
  }

  /** A pin's popup: the camera's open incidents, newest first.
   *  @param {PlacedCamera} camera */
  pinPopup(camera) {
    const incidents = [...(this.open.get(camera.id)?.values() ?? [])]
      .sort((a, b) => b.started_at.localeCompare(a.started_at));
    const more = incidents.length - PIN_LIST;
    const toQueue = () => (state.filters = { camera_id: camera.id });
    return h("div", {},
      h("a", { class: "popup-title", href: `#/cameras/${encodeURIComponent(camera.id)}` }, camera.name),
      h("ul", {}, incidents.slice(0, PIN_LIST).map((incident) => h("li", {},
        h("a", { href: `#/incidents/${encodeURIComponent(incident.id)}` }, formatTime(incident.started_at)),
        " ", t(`type.${incident.type}`), " ",
        badge("status", incident.status, t(`status.${incident.status}`))))),
      more > 0 ? h("a", { href: "#/incidents", onclick: toQueue }, t("map.more", { n: more })) : null,
    );
  }

  // -- Live updates and camera states -----------------------------------------------------

  /** @param {LiveEvent} event */
  onEvent(event) {
    const data = event.data ?? {};
    if (event.type === "camera.online" || event.type === "camera.offline") {
      this.setState(data.camera_id, data.state ?? event.type.slice("camera.".length));
    } else if (event.type.startsWith("incident.") && data.id && data.camera_id && data.status) {
      this.keepIncident(/** @type {Incident} */ (data));
      this.paintPin(data.camera_id);
      this.showSummary();
    }
  }

  /**
   * @param {string} id
   * @param {string} value
   */
  setState(id, value) {
    this.statuses.set(id, { state: value, at: Date.now() });
    this.paintCamera(id, value);
  }

  startPolling() {
    this.timer = setInterval(() => this.poll(), STATUS_PASS_MS);
    this.poll();
  }

  pollSoon() {
    clearTimeout(this.soon);
    this.soon = setTimeout(() => this.poll(), 300);
  }

  /** Read the states of cameras in view that are not fresh, oldest first, a few at a time. */
  async poll() {
    if (this.polling || document.hidden || this.signal.aborted) return;
    this.polling = true;
    const bounds = this.map.getBounds();
    const age = (id) => this.statuses.get(id)?.at ?? 0;
    const due = [...this.cameras.values()]
      .filter((camera) => bounds.contains(at(camera)) && Date.now() - age(camera.id) > STATUS_FRESH_MS)
      .sort((a, b) => age(a.id) - age(b.id))
      .slice(0, STATUS_PER_PASS);
    await inParallel(due, STATUS_PARALLEL, (camera) => this.readStatus(camera.id));
    this.polling = false;
  }

  /** @param {string} id */
  async readStatus(id) {
    try {
      const status = await getJson(`/cameras/${encodeURIComponent(id)}/status`, { signal: this.signal });
      this.setState(id, status.state);
    } catch {
      this.statuses.set(id, { state: this.statuses.get(id)?.state ?? "unknown", at: Date.now() }); // retried when stale
    }
  }

  dispose() {
    clearInterval(this.timer);
    clearTimeout(this.soon);
    this.map.remove();
  }
}

// -- Helpers -----------------------------------------------------------------------------

/** @param {MapCamera} camera
 *  @returns {camera is PlacedCamera} */
function hasLocation(camera) {
  return Number.isFinite(camera.location?.lat) && Number.isFinite(camera.location?.lon);
}

/** @param {PlacedCamera} camera
 *  @returns {L.LatLngTuple} */
function at(camera) {
  return [camera.location.lat, camera.location.lon];
}

/** A GeoJSON Polygon's or MultiPolygon's rings as Leaflet's [lat, lng]; null otherwise.
 *  @param {MapGrid["boundary"]} geometry
 *  @returns {L.LatLngRings | null} */
function latLngs(geometry) {
  /** @param {[number, number][]} ring */
  const flip = (ring) => ring.map(([lon, lat]) => /** @type {L.LatLngTuple} */ ([lat, lon]));
  if (geometry?.type === "Polygon") return geometry.coordinates.map(flip);
  if (geometry?.type === "MultiPolygon") return geometry.coordinates.map((polygon) => polygon.map(flip));
  return null;
}

/** @param {string} value */
function stateText(value) {
  return CAMERA_STATES.includes(value) && value !== "unknown" ? t(`camera.state.${value}`) : t("map.state_unknown");
}

/**
 * Run fn over items, at most limit at a time.
 * @template T
 * @param {T[]} items
 * @param {number} limit
 * @param {(item: T) => Promise<void>} fn
 */
async function inParallel(items, limit, fn) {
  const queue = [...items];
  const worker = async () => {
    while (queue.length) await fn(queue.shift());
  };
  await Promise.all(Array.from({ length: Math.min(limit, queue.length) }, worker));
}

/** What the colours and lines mean. */
function legend() {
  return mapLegend(
    LEVELS.map((level) => legendItem(`level-${level}`, t(`map.level.${level}`))),
    cameraLegend(),
    legendItem("pin", t("map.incidents")),
  );
}

/** A map legend of these items.
 *  @param {...(HTMLLIElement | HTMLLIElement[])} items */
export function mapLegend(...items) {
  return h("ul", { class: "map-legend", "aria-label": t("map.legend") }, ...items);
}

/** One legend entry: a swatch (class "swatch {kind}", map.css draws it) and its meaning.
 *  @param {string} kind
 *  @param {string} text */
export function legendItem(kind, text) {
  return h("li", {}, h("span", { class: `swatch ${kind}`, "aria-hidden": "true" }), text);
}

/** The camera markers' states. */
export function cameraLegend() {
  return CAMERA_STATES.map((value) => legendItem(`camera-${value}`, stateText(value)));
}
