// The grid tree in the side bar (网格: the administrative grid cells cameras belong to).
// Picking a grid filters the queue and the wall to its whole subtree.

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
  /** @type {GridsByParent} */
  const byParent = new Map();
  const codes = new Set(state.grids.map((g) => g.code));
  for (const grid of state.grids) {
    const parent = codes.has(grid.parent_code) ? grid.parent_code : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(grid);
  }
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
 */
function pickGrid(grid, byParent) {
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
  route();
}
