// The grid tree in the side bar (网格: the administrative grid cells cameras belong to).
// Picking a grid filters the queue and the wall to its whole subtree (so does clicking it
// on the map, through selectGrid).

import { api, apiError } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { route, state } from "./state.js";

/** @typedef {import("./api.js").Grid} Grid */
/** @typedef {Map<string | null, Grid[]>} GridsByParent */

export async function loadGrids() {
  try {
    const response = await api("/grids?limit=1000");
    if (response.status === 404 || response.status === 501) throw new Error("no grids");
    if (!response.ok) throw await apiError(response);
    const page = await response.json();
    state.grids = Array.isArray(page.items) ? page.items : [];
    state.gridsAvailable = true;
  } catch {
    state.grids = [];
    state.gridsAvailable = false;
  }
  renderGridTree();
}

export function renderGridTree() {
  const box = document.getElementById("grid-tree");
  if (!state.gridsAvailable) {
    box.replaceChildren(h("p", { class: "hint" }, t("grids.unavailable")));
    return;
  }
  if (!state.grids.length) {
    box.replaceChildren(h("p", { class: "hint" }, t("grids.none")));
    return;
  }
  const byParent = gridsByParent();
  /** @param {Grid} grid @returns {HTMLLIElement} */
  const node = (grid) =>
    h(
      "li",
      {},
      gridButton(grid, byParent),
      byParent.has(grid.code) ? h("ul", {}, byParent.get(grid.code).map(node)) : null,
    );
  const all = h(
    "button",
    { type: "button", class: "tree-item", "aria-pressed": String(!state.grid), onclick: () => pickGrid(null) },
    t("grids.all"),
  );
  box.replaceChildren(all, h("ul", { class: "tree" }, (byParent.get(null) || []).map(node)));
}

/** Grids by parent code (null: the roots, whose parent is not in the list).
 *  @param {Grid[]} [grids]
 *  @returns {GridsByParent} */
function gridsByParent(grids = state.grids) {
  /** @type {GridsByParent} */
  const byParent = new Map();
  const codes = new Set(grids.map((g) => g.code));
  for (const grid of grids) {
    const parent = codes.has(grid.parent_code) ? grid.parent_code : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(grid);
  }
  return byParent;
}

/**
 * Select the grid with this code (null: all grids), as picking it in the tree does.
 * @param {string | null} code
 * @param {boolean} [rerender] false: keep the current view (the map highlights it itself)
 * @param {Grid[]} [grids] where to find it and its subtree (the map has every page of them)
 */
export function selectGrid(code, rerender = true, grids = state.grids) {
  const grid = code === null ? null : grids.find((g) => g.code === code);
  if (grid !== undefined) pickGrid(grid, gridsByParent(grids), rerender);
}

/**
 * @param {Grid} grid
 * @param {GridsByParent} byParent
 */
function gridButton(grid, byParent) {
  const selected = state.grid?.code === grid.code;
  return h(
    "button",
    {
      type: "button",
      class: "tree-item",
      "aria-pressed": String(selected),
      dataset: { code: grid.code },
      onclick: () => pickGrid(grid, byParent),
    },
    grid.name || grid.code,
  );
}

/**
 * @param {Grid | null} grid
 * @param {GridsByParent} [byParent]
 * @param {boolean} [rerender]
 */
function pickGrid(grid, byParent, rerender = true) {
  if (!grid) state.grid = null;
  else {
    /** @type {Set<string>} */
    const codes = new Set();
    /** @param {string} code */
    const walk = (code) => {
      codes.add(code);
      for (const child of byParent.get(code) || []) walk(child.code);
    };
    walk(grid.code);
    state.grid = { code: grid.code, name: grid.name || grid.code, codes, leaf: codes.size === 1 };
  }
  renderGridTree();
  if (rerender) route();
}
