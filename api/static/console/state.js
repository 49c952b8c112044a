// State shared by the console's modules: the operator's token, what was loaded at sign-in
// (cameras, grids), the selected grid, the queue's and the case list's filters and the
// current view; and the hook through which a module re-renders the current view (the router
// in app.js).

/** @typedef {import("./api.js").Camera} Camera */
/** @typedef {import("./api.js").Grid} Grid */
/** @typedef {import("./api.js").LiveEvent} LiveEvent */

/**
 * The grid picked in the tree, with the codes of its whole subtree.
 * @typedef {{code: string, name: string, codes: Set<string>, leaf: boolean}} SelectedGrid
 */

/**
 * What a render function returns: the page's reaction to live events, and what to undo
 * when the operator leaves it (timers, live sessions, blob: URLs).
 * @typedef {{onEvent?: (event: LiveEvent) => unknown, cleanup?: () => void}} View
 */

/**
 * Queue filters by form field name (camera_id, type, status, since, until).
 * @typedef {Record<string, string>} Filters
 */

export const TOKEN_KEY = "xl.token";

export const state = {
  /** @type {string | null} */
  token: sessionStorage.getItem(TOKEN_KEY),
  /** @type {Map<string, Camera>} */
  cameras: new Map(), // id → camera
  /** @type {Grid[]} */
  grids: [], // flat list from GET /grids
  gridsAvailable: false, // false when the grids API answered 404 or failed
  /** @type {SelectedGrid | null} */
  grid: null, // selected grid: {code, name, codes: Set of its subtree, leaf}
  /** @type {Filters} */
  filters: {},
  /** @type {Filters} */
  caseFilters: {}, // the case list's: state, overdue ("true" or "")
  /** @type {View | null} */
  view: null, // the current view: {onEvent?, cleanup?}
  renders: 0,
};

export function cameraName(id) {
  return state.cameras.get(id)?.name ?? id;
}

/** Whether a grid code is within the selected grid (always, when none is selected). */
export function inGrid(code) {
  return !state.grid || state.grid.codes.has(code);
}

/** @type {() => void} */
let router = () => {};

/** Register the router (app.js does, before anything can render). */
export function setRouter(fn) {
  router = fn;
}

/** Render the view for the current location.hash (cleaning up the previous one). */
export function route() {
  router();
}
