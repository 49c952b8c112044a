// The sign-in view (#/login, and whenever there is no token) and the start of a session:
// the token is checked against the API, kept in sessionStorage (gone when the tab closes),
// then the first cameras and the grids are loaded and the live event stream followed.

import { API, getJson, runEvents } from "./api.js";
import { h, show } from "./dom.js";
import { loadGrids } from "./grids.js";
import { t } from "./i18n.js";
import { TOKEN_KEY, route, state } from "./state.js";

/** Show the signed-in chrome and load what every view needs. */
export async function afterLogin() {
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("side").hidden = false;
  await Promise.all([loadCameras(), loadGrids()]);
  runEvents();
}

/** The names of the first cameras by name, for the views that show a camera by its id (the
 *  queue, incidents, cases); the wall and the map add the cameras they page through, and a
 *  camera not known yet shows its id. One page: a city has 20 000 cameras. */
async function loadCameras() {
  try {
    const page = await getJson("/cameras?order=name&limit=1000");
    state.cameras = new Map(page.items.map((c) => [c.id, c]));
  } catch (err) {
    console.warn("cameras", err);
  }
}

export function renderLogin() {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("side").hidden = true;
  document.getElementById("live-state").hidden = true;
  const message = h("p", { class: "error", role: "alert", id: "login-error" });
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "token-hint",
  });
  const form = h(
    "form",
    { class: "card login", onsubmit: (e) => login(e, input.value.trim(), message) },
    h("h1", {}, t("login.title")),
    h("label", { for: "token" }, t("login.token")),
    input,
    h("p", { class: "hint", id: "token-hint" }, t("login.hint")),
    message,
    h("button", { type: "submit", class: "primary" }, t("login.submit")),
  );
  show(form);
  input.focus();
}

/**
 * @param {SubmitEvent} event
 * @param {string} token
 * @param {HTMLElement} message
 */
async function login(event, token, message) {
  event.preventDefault();
  message.textContent = "";
  let response;
  try {
    response = await fetch(`${API}/incidents?limit=1`, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
  } catch {
    message.textContent = t("login.failed");
    return;
  }
  if (response.status === 401) message.textContent = t("login.bad");
  else if (response.status === 403) message.textContent = t("login.forbidden");
  else if (!response.ok) message.textContent = t("login.failed");
  if (!response.ok) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  await afterLogin();
  location.hash = "#/incidents";
  route();
}
