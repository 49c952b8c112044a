// Xueliang operator console: a small single-page app without a framework or build step.
// Views are chosen by location.hash; data comes from /api/v1 with the operator's bearer
// token (sessionStorage: gone when the tab closes); live updates come from the SSE event
// stream read with fetch() (EventSource cannot send an Authorization header).
//
// This entry module routes and starts; the rest is one module per view (login.js,
// queue.js, incident.js, cases.js, wall.js, camera.js, map.js, health.js, grids.js for the
// side bar) on shared ones (api.js, dom.js, state.js, live.js, evidence.js, i18n.js).
// The service worker sw.js only adds the token to evidence requests.

import { logout, setLive } from "./api.js";
import { renderCamera } from "./camera.js";
import { renderCase, renderCases } from "./cases.js";
import { h, main } from "./dom.js";
import { renderGridTree } from "./grids.js";
import { renderHealth } from "./health.js";
import { LANGUAGES, lang, setLang, translate } from "./i18n.js";
import { renderIncident } from "./incident.js";
import { afterLogin, renderLogin } from "./login.js";
import { renderMap } from "./map.js";
import { renderQueue } from "./queue.js";
import { setRouter, state } from "./state.js";
import { renderWall } from "./wall.js";

/** Render the view for location.hash, after the previous view's cleanup. */
function route() {
  state.view?.cleanup?.();
  state.view = null;
  translate();
  if (!state.token) {
    renderLogin();
    return;
  }
  const [section, id] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${section}`);
  }
  if (section === "incidents") state.view = id ? renderIncident(id) : renderQueue();
  else if (section === "cases") state.view = id ? renderCase(id) : renderCases();
  else if (section === "cameras") state.view = id ? renderCamera(id) : renderWall();
  else if (section === "map") state.view = renderMap();
  else if (section === "health") state.view = renderHealth();
  else {
    location.hash = "#/incidents";
    return;
  }
  main().focus({ preventScroll: true });
}
setRouter(route);

function setupLanguage() {
  const select = /** @type {HTMLSelectElement} */ (document.getElementById("lang"));
  select.replaceChildren(
    ...Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, selected: code === lang() }, name)),
  );
  select.addEventListener("change", () => {
    setLang(select.value);
    if (state.token) renderGridTree();
    route();
    const live = document.getElementById("live-state");
    if (!live.hidden) setLive(live.dataset.live === "1");
  });
  setLang(lang());
}

async function start() {
  setupLanguage();
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  if (state.token) await afterLogin();
  route();
  /** @type {Window & {xlReady?: boolean}} */ (window).xlReady = true; // for tests: the console has started (not reloaded since)
}

start();
