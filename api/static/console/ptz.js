// PTZ controls of the camera page (a camera registered through ONVIF whose probe found PTZ):
// pan/tilt arrows and zoom +/- that move the camera while held — with the pointer, or with
// Enter/Space, the arrow keys, + and − on a focused button — and stop it on release.
//
// The API moves for duration_s and then stops the camera itself, so a held button renews
// its move before that runs out: when the console vanishes mid-move (tab closed, network
// gone), the camera stops within MOVE_S instead of running on to its end stop. Commands go
// out one after the other, so a stop never overtakes the move it ends.

import { api, apiError } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

const SPEED = 0.5; // of the camera's range, -1 .. 1
const MOVE_S = 1.5; // each move's own end (the API stops the camera after it)
const RENEW_MS = 1000; // a held move is sent again this often, before MOVE_S runs out
const STEP_S = 0.5; // a click without a press (a screen reader's) moves this long

/** @typedef {{pan?: number, tilt?: number, zoom?: number, label: string, symbol: string, keys: string[]}} Move */

/** @type {Record<string, Move>} */
const MOVES = {
  up: { tilt: SPEED, label: "ptz.up", symbol: "▲", keys: ["ArrowUp"] },
  left: { pan: -SPEED, label: "ptz.left", symbol: "◀", keys: ["ArrowLeft"] },
  right: { pan: SPEED, label: "ptz.right", symbol: "▶", keys: ["ArrowRight"] },
  down: { tilt: -SPEED, label: "ptz.down", symbol: "▼", keys: ["ArrowDown"] },
  zoom_in: { zoom: SPEED, label: "ptz.zoom_in", symbol: "+", keys: ["+", "="] },
  zoom_out: { zoom: -SPEED, label: "ptz.zoom_out", symbol: "−", keys: ["-", "_"] },
};
const PRESS_KEYS = ["Enter", " "];

/** The PTZ pad of a camera; `stop()` ends a held move (call it when the page goes).
 *  @param {string} cameraId */
export function ptzControls(cameraId) {
  const note = h("p", { class: "hint", id: "ptz-note", role: "status" }, t("ptz.hint"));
  const buttons = Object.entries(MOVES).map(([name, move]) =>
    h("button", {
      type: "button",
      class: "secondary",
      dataset: { ptz: name },
      "aria-label": t(move.label),
      "aria-pressed": "false",
      title: t(move.label),
    }, move.symbol));
  const el = h("div", { class: "ptz", role: "group", "aria-label": t("ptz.title"), id: "ptz" },
    h("div", { class: "ptz-pad" }, buttons.slice(0, 4)),
    h("div", { class: "ptz-zoom" }, buttons.slice(4)),
    note);

  /** @type {string | null} */
  let held = null; // the move held now
  /** @type {string | null} */
  let heldKey = null; // the key holding it, if a key does
  /** @type {ReturnType<typeof setInterval> | null} */
  let renew = null;
  let queue = Promise.resolve();
  let inFlight = 0;

  /** @param {Record<string, unknown>} body */
  function send(body) {
    inFlight++;
    queue = queue.then(async () => {
      try {
        const response = await api(`/cameras/${encodeURIComponent(cameraId)}/ptz`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        if (!response.ok) throw await apiError(response);
        note.textContent = t("ptz.hint");
      } catch (err) {
        note.textContent = t("ptz.failed", { detail: err.message });
      } finally {
        inFlight--;
      }
    });
  }

  /** @param {string} name @param {number} seconds */
  function move(name, seconds) {
    const { pan = 0, tilt = 0, zoom = 0 } = MOVES[name];
    send({ action: "move", pan, tilt, zoom, duration_s: seconds });
  }

  /** @param {string} name @param {string | null} key */
  function press(name, key = null) {
    if (held === name) return;
    release();
    held = name;
    heldKey = key;
    mark(name, true);
    move(name, MOVE_S);
    renew = setInterval(() => {
      if (!inFlight) move(name, MOVE_S); // a slow camera is not sent a backlog of moves
    }, RENEW_MS);
  }

  function release() {
    if (!held) return;
    mark(held, false);
    clearInterval(renew);
    held = heldKey = null;
    send({ action: "stop" });
  }

  /** @param {string} name @param {boolean} on */
  function mark(name, on) {
    el.querySelector(`[data-ptz="${name}"]`)?.setAttribute("aria-pressed", String(on));
  }

  for (const button of buttons) {
    const name = button.dataset.ptz;
    button.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      button.setPointerCapture(e.pointerId); // the release arrives even off the button
      press(name);
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(type, () => held === name && !heldKey && release());
    }
    button.addEventListener("contextmenu", (e) => e.preventDefault()); // a long touch
    button.addEventListener("click", (e) => {
      if (e.detail === 0 && !held) move(name, STEP_S); // activated without a press
    });
  }
  el.addEventListener("keydown", (e) => {
    const focused = /** @type {HTMLElement} */ (e.target).dataset?.ptz;
    const name = PRESS_KEYS.includes(e.key) ? focused : keyMove(e.key);
    if (!name) return;
    e.preventDefault(); // no click, no scrolling
    if (!e.repeat) press(name, e.key);
  });
  el.addEventListener("keyup", (e) => {
    if (e.key !== heldKey) return;
    e.preventDefault();
    release();
  });
  el.addEventListener("focusout", (e) => {
    if (!el.contains(/** @type {Node | null} */ (e.relatedTarget)) && heldKey) release();
  });
  const onHide = () => release();
  window.addEventListener("blur", onHide);
  document.addEventListener("visibilitychange", onHide);

  return {
    el,
    stop() {
      release();
      window.removeEventListener("blur", onHide);
      document.removeEventListener("visibilitychange", onHide);
    },
  };
}

/** The move a key makes (arrows, + and −), if any.
 *  @param {string} key */
function keyMove(key) {
  return Object.keys(MOVES).find((name) => MOVES[name].keys.includes(key)) ?? null;
}
