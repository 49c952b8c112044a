// Xueliang operator console: a small single-page app without a framework or build step.
// Views are chosen by location.hash; data comes from /api/v1 with the operator's bearer
// token (sessionStorage: gone when the tab closes); live updates come from the SSE event
// stream read with fetch() (EventSource cannot send an Authorization header).

import { LANGUAGES, formatTime, lang, setLang, t, translate } from "./i18n.js";

const API = "/api/v1";
const TOKEN_KEY = "xl.token";
const MAX_LIVE_TILES = 4; // WebRTC tiles decode in the browser: keep a modest PC responsive
const SNAPSHOT_REFRESH_MS = 2000;
const STATUS_REFRESH_MS = 4000;
const TRANSITIONS = {
  acknowledge: ["new"],
  resolve: ["new", "acknowledged"],
  dismiss: ["new", "acknowledged"],
  reopen: ["resolved", "dismissed"],
};

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  cameras: new Map(), // id → camera
  grids: [], // flat list from GET /grids
  gridsAvailable: false, // false when the grids API answered 404 or failed
  grid: null, // selected grid: {code, name, codes: Set of its subtree, leaf}
  filters: {},
  view: null, // the current view: {onEvent?, cleanup?}
  renders: 0,
};
const main = () => document.getElementById("main");

// -- DOM -------------------------------------------------------------------------------------

/** Create an element: h("a", {href: "#", class: "x", onclick: fn}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "muted") {
      el.muted = true; // the attribute alone does not mute a created element (autoplay)
      el.setAttribute("muted", "");
    }
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function badge(kind, value, text) {
  return h("span", { class: `badge ${kind}-${value}` }, text);
}

function show(...nodes) {
  const el = main();
  el.replaceChildren(...nodes);
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, t("error.generic", { detail: err.message }));
}

// -- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(API + path, { ...options, headers, cache: "no-store" });
  if (response.status === 401 && state.token) {
    logout();
    throw new ApiError(401, t("login.bad"));
  }
  return response;
}

async function apiError(response) {
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, detail);
}

async function getJson(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw await apiError(response);
  return response.json();
}

/** Fetch an authorised image/clip into a blob: URL (revoke it when done). */
async function blobUrl(path) {
  const response = await api(path);
  if (!response.ok) throw await apiError(response);
  return URL.createObjectURL(await response.blob());
}

// -- Live events (SSE over fetch) ------------------------------------------------------------------

const events = { lastId: null, abort: null, generation: 0 };

async function runEvents() {
  const generation = ++events.generation; // a new sign-in ends the previous loop
  let delay = 1000;
  while (state.token && generation === events.generation) {
    events.abort = new AbortController();
    try {
      const headers = { Accept: "text/event-stream" };
      if (events.lastId) headers["Last-Event-ID"] = events.lastId;
      const response = await api("/events/stream", { headers, signal: events.abort.signal });
      if (!response.ok || !response.body) throw await apiError(response);
      setLive(true);
      delay = 1000;
      await readSse(response.body, dispatchEvent_);
    } catch (err) {
      if (!state.token) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

async function readSse(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      parseSseBlock(buffer.slice(0, end), handle);
      buffer = buffer.slice(end + 2);
    }
  }
}

function parseSseBlock(block, handle) {
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (id) events.lastId = id;
  if (!data.length) return;
  try {
    handle(JSON.parse(data.join("\n")));
  } catch (err) {
    console.warn("bad event", err);
  }
}

function dispatchEvent_(event) {
  if (event.type === "camera.online" || event.type === "camera.offline") {
    const camera = state.cameras.get(event.data.camera_id);
    if (camera) camera.state = event.type.slice("camera.".length);
  }
  state.view?.onEvent?.(event);
}

function setLive(on) {
  const el = document.getElementById("live-state");
  el.hidden = false;
  el.className = `live-state ${on ? "on" : "off"}`;
  el.textContent = t(on ? "live.connected" : "live.reconnecting");
  el.dataset.live = on ? "1" : "0";
}

// -- Session -------------------------------------------------------------------------------------

function logout() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  events.abort?.abort();
  location.hash = "#/login";
  route();
}

async function afterLogin() {
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("side").hidden = false;
  await Promise.all([loadCameras(), loadGrids()]);
  runEvents();
}

async function loadCameras() {
  try {
    const page = await getJson("/cameras");
    state.cameras = new Map(page.items.map((c) => [c.id, c]));
  } catch (err) {
    console.warn("cameras", err);
  }
}

function cameraName(id) {
  return state.cameras.get(id)?.name ?? id;
}

function renderLogin() {
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

// -- Grid tree ---------------------------------------------------------------------------------------

async function loadGrids() {
  const box = document.getElementById("grid-tree");
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

function renderGridTree() {
  const box = document.getElementById("grid-tree");
  if (!state.gridsAvailable) {
    box.replaceChildren(h("p", { class: "hint" }, t("grids.unavailable")));
    return;
  }
  if (!state.grids.length) {
    box.replaceChildren(h("p", { class: "hint" }, t("grids.none")));
    return;
  }
  const byParent = new Map();
  const codes = new Set(state.grids.map((g) => g.code));
  for (const grid of state.grids) {
    const parent = codes.has(grid.parent_code) ? grid.parent_code : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(grid);
  }
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

function pickGrid(grid, byParent) {
  if (!grid) state.grid = null;
  else {
    const codes = new Set();
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

function inGrid(code) {
  return !state.grid || state.grid.codes.has(code);
}

// -- Incident queue ---------------------------------------------------------------------------------

function renderQueue() {
  const f = state.filters;
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, t("queue.more"));
  const announce = h("p", { class: "announce", role: "status", "aria-live": "polite" });
  const empty = h("p", { class: "hint", hidden: true }, t("queue.empty"));
  let cursor = null;
  let fresh = 0;

  const select = (name, options) =>
    h(
      "select",
      { name, id: `f-${name}` },
      h("option", { value: "" }, t("queue.any")),
      options.map(([value, text]) => h("option", { value, selected: f[name] === value }, text)),
    );
  const cameras = [...state.cameras.values()].map((c) => [c.id, c.name]);
  const form = h(
    "form",
    { class: "filters", "aria-label": t("queue.filters"), onsubmit: (e) => applyFilters(e, form) },
    field("camera_id", t("queue.camera"), select("camera_id", cameras)),
    field("type", t("queue.type"), select("type", ["motion", "crowd"].map((v) => [v, t(`type.${v}`)]))),
    field(
      "status",
      t("queue.status"),
      select("status", Object.keys(STATUS_ORDER).map((v) => [v, t(`status.${v}`)])),
    ),
    field("since", t("queue.since"), h("input", { type: "datetime-local", name: "since", id: "f-since", value: f.since || "" })),
    field("until", t("queue.until"), h("input", { type: "datetime-local", name: "until", id: "f-until", value: f.until || "" })),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, t("queue.apply")),
      h("button", { type: "button", class: "secondary", onclick: () => { state.filters = {}; route(); } }, t("queue.reset")),
    ),
  );
  const table = h(
    "table",
    { class: "queue", id: "queue" },
    h("caption", { class: "sr" }, t("queue.title")),
    h("thead", {}, h("tr", {},
      [t("queue.started"), t("queue.camera"), t("queue.grid"), t("queue.type"), t("queue.status"), t("queue.clip")]
        .map((text) => h("th", { scope: "col" }, text)))),
    tbody,
  );
  show(
    h("div", { class: "title-row" },
      h("h1", {}, t("queue.title")),
      state.grid ? h("span", { class: "chip" }, t("queue.grid_filter", { grid: state.grid.name })) : null,
      announce),
    form, table, empty, more,
  );

  async function load(append) {
    const params = queryFor(f);
    if (append && cursor) params.set("cursor", cursor);
    try {
      const page = await getJson(`/incidents?${params}`);
      if (!append) tbody.replaceChildren();
      for (const incident of page.items) if (inGrid(incident.grid_code)) tbody.append(queueRow(incident));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = tbody.children.length > 0;
    } catch (err) {
      main().append(errorBox(err));
    }
  }
  more.addEventListener("click", () => load(true));
  load(false);

  return {
    async onEvent(event) {
      if (!event.type.startsWith("incident.") || !event.data?.id) return;
      const row = tbody.querySelector(`tr[data-id="${CSS.escape(event.data.id)}"]`);
      if (row) {
        row.replaceWith(queueRow({ ...row._incident, ...event.data, clip: clipOf(row._incident, event.data) }));
        return;
      }
      if (event.type !== "incident.created") return;
      const incident = await getJson(`/incidents/${encodeURIComponent(event.data.id)}`).catch(() => null);
      if (!incident || !matches(incident, f) || tbody.querySelector(`tr[data-id="${CSS.escape(incident.id)}"]`)) return;
      const newRow = queueRow(incident);
      newRow.classList.add("fresh");
      tbody.prepend(newRow);
      empty.hidden = true;
      fresh += 1;
      announce.textContent = t("queue.new_count", { n: fresh });
    },
  };
}

const STATUS_ORDER = { new: 0, acknowledged: 1, resolved: 2, dismissed: 3 };

function field(name, label, control) {
  return h("div", { class: "field" }, h("label", { for: `f-${name}` }, label), control);
}

function applyFilters(event, form) {
  event.preventDefault();
  const data = new FormData(form);
  state.filters = Object.fromEntries([...data.entries()].filter(([, v]) => v));
  route();
}

function queryFor(f) {
  const params = new URLSearchParams({ limit: "50" });
  for (const key of ["camera_id", "type", "status"]) if (f[key]) params.set(key, f[key]);
  for (const key of ["since", "until"]) if (f[key]) params.set(key, new Date(f[key]).toISOString());
  if (state.grid?.leaf) params.set("grid_code", state.grid.code);
  return params;
}

function matches(incident, f) {
  if (f.camera_id && incident.camera_id !== f.camera_id) return false;
  if (f.type && incident.type !== f.type) return false;
  if (f.status && incident.status !== f.status) return false;
  const started = new Date(incident.started_at);
  if (f.since && started < new Date(f.since)) return false;
  if (f.until && started >= new Date(f.until)) return false;
  return inGrid(incident.grid_code);
}

function clipOf(incident, summary) {
  if (!("clip_state" in summary)) return incident.clip;
  return summary.clip_state ? { ...(incident.clip || {}), state: summary.clip_state } : null;
}

function queueRow(incident) {
  const href = `#/incidents/${encodeURIComponent(incident.id)}`;
  const clip = incident.clip?.state || "none";
  const row = h(
    "tr",
    { dataset: { id: incident.id, status: incident.status }, class: `status-${incident.status}` },
    h("td", {}, h("a", { href }, formatTime(incident.started_at))),
    h("td", {}, cameraName(incident.camera_id)),
    h("td", {}, incident.grid_code || "—"),
    h("td", {}, t(`type.${incident.type}`)),
    h("td", {}, badge("status", incident.status, t(`status.${incident.status}`))),
    h("td", {}, badge("clip", clip, t(`clip.${clip}`))),
  );
  row._incident = incident;
  row.addEventListener("click", (e) => {
    if (e.target.tagName !== "A") location.hash = href;
  });
  return row;
}

// -- Incident page ------------------------------------------------------------------------------------

function renderIncident(id) {
  const facts = h("dl", { class: "facts" });
  const media = h("div", { class: "media" });
  const review = h("section", { class: "card review", "aria-labelledby": "review-title" });
  const history = h("section", { class: "card", "aria-labelledby": "history-title" });
  const heading = h("h1", {}, t("incident.title"));
  const urls = [];
  let clipShown = null;
  show(
    h("p", {}, h("a", { href: "#/incidents" }, "← " + t("incident.back"))),
    heading,
    h("div", { class: "incident" }, media, h("div", { class: "side-col" }, facts, review, history)),
  );

  const form = reviewForm(review, () => refresh());
  async function refresh() {
    let incident;
    try {
      incident = await getJson(`/incidents/${encodeURIComponent(id)}`);
    } catch (err) {
      show(err.status === 404 ? h("p", { class: "error" }, t("error.notfound")) : errorBox(err));
      return;
    }
    heading.replaceChildren(
      `${t(`type.${incident.type}`)} · ${cameraName(incident.camera_id)} `,
      badge("status", incident.status, t(`status.${incident.status}`)),
    );
    renderFacts(facts, incident);
    form.update(incident);
    renderHistory(history, incident);
    const clipKey = `${incident.clip?.state}:${incident.clip?.url}`;
    if (clipShown !== clipKey) {
      clipShown = clipKey;
      renderMedia(media, incident, urls);
    }
  }
  refresh();
  return {
    onEvent(event) {
      if (event.type.startsWith("incident.") && event.data?.id === id) refresh();
    },
    cleanup() {
      for (const url of urls) URL.revokeObjectURL(url);
    },
  };
}

function renderFacts(facts, incident) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  facts.replaceChildren(
    ...row(t("incident.camera"), h("a", { href: `#/cameras/${encodeURIComponent(incident.camera_id)}` }, cameraName(incident.camera_id))),
    ...row(t("incident.started"), formatTime(incident.started_at)),
    ...row(t("incident.ended"), incident.ended_at ? formatTime(incident.ended_at) : t("incident.ongoing")),
    ...row(t("incident.grid"), incident.grid_code || "—"),
    ...(incident.peak_persons != null ? row(t("incident.persons"), String(incident.peak_persons)) : []),
    ...row(t("incident.cases"), casesList(incident.case_ids || [])),
  );
}

function casesList(ids) {
  if (!ids.length) return t("incident.no_cases");
  const list = h("ul", { class: "cases" });
  for (const id of ids) {
    const item = h("li", {}, id);
    list.append(item);
    getJson(`/cases/${encodeURIComponent(id)}`)
      .then((c) => item.replaceChildren(`${c.title} (${c.external_ref})`))
      .catch(() => {});
  }
  return list;
}

function renderMedia(media, incident, urls) {
  const snapshot = h("figure", { class: "snapshot" }, h("figcaption", {}, t("incident.snapshot")));
  const clip = h("figure", { class: "clip" }, h("figcaption", {}, t("incident.clip")));
  media.replaceChildren(clip, snapshot);
  if (incident.snapshot?.url) {
    const img = h("img", { alt: t("incident.snapshot"), id: "snapshot" });
    snapshot.append(img);
    evidenceSrc(incident.snapshot.url, urls).then((url) => {
      img.src = url;
    }, () => img.replaceWith(t("incident.no_snapshot")));
  } else snapshot.append(h("p", { class: "hint" }, t("incident.no_snapshot")));
  const state_ = incident.clip?.state;
  if (state_ === "archived" && incident.clip.url) {
    const video = h("video", { id: "clip", controls: true, preload: "metadata", playsinline: true, muted: true });
    clip.append(video, h("p", { class: "hint mono" }, `${t("incident.sha")}: ${incident.clip.sha256 || "—"}`));
    playClip(video, incident.clip.url, urls);
  } else if (state_ === "pending") clip.append(h("p", { class: "hint" }, t("incident.clip_pending")));
  else if (state_ === "failed") clip.append(h("p", { class: "error" }, t("incident.clip_failed", { error: incident.clip.error || "" })));
  else clip.append(h("p", { class: "hint" }, t("incident.no_clip")));
}

/** Where the object store serves this evidence directly (a presigned URL), or null when
 *  the API serves it. A fetch that follows the API's redirect to the store fails CORS
 *  (browsers send no Origin after a same-origin to cross-origin redirect), while an
 *  <img> or <video> loads the presigned URL itself (its origin is in the page's CSP). */
async function directUrl(url) {
  const link = await getJson(`${url.replace(API, "")}/link`);
  return link.expires_at ? link.url : null;
}

/** An src for a snapshot: the store's presigned URL, or the bytes as a blob: URL. */
async function evidenceSrc(url, urls) {
  const direct = await directUrl(url);
  if (direct) return direct;
  const blob = await blobUrl(url.replace(API, ""));
  urls.push(blob);
  return blob;
}

/** Play from the object store when it presigns (its URL expires: a failed load after that
 *  asks for a fresh one and resumes); otherwise stream the clip through the service worker
 *  (Range requests, seekable while loading); without one (plain-HTTP LAN address: no
 *  secure context) fetch it whole into a blob. */
async function playClip(video, url, urls) {
  const direct = await directUrl(url);
  if (direct) {
    video.dataset.source = "direct";
    video.src = direct;
    let renewals = 0;
    video.addEventListener("error", async () => {
      if (renewals++ >= 3) return;
      const at = video.currentTime;
      video.src = (await directUrl(url)) || direct;
      video.currentTime = at;
    });
  } else if (await evidenceWorker()) {
    video.dataset.source = "stream";
    video.src = url;
  } else {
    video.dataset.source = "blob";
    const blob = await blobUrl(url.replace(API, ""));
    urls.push(blob);
    video.src = blob;
  }
  video.play().catch(() => {}); // muted autoplay; the operator may still press play
}

let workerReady = null;
const WORKER_WAIT_MS = 3000;

/** Whether the evidence service worker controls this page (registered on first use). */
function evidenceWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return Promise.resolve(false);
  workerReady ??= Promise.race([
    startWorker(),
    new Promise((resolve) => setTimeout(() => resolve(false), WORKER_WAIT_MS)),
  ]);
  return workerReady;
}

async function startWorker() {
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data?.type === "xl-token?" && event.ports[0]) event.ports[0].postMessage(state.token);
  });
  try {
    await navigator.serviceWorker.register("sw.js", { scope: "./" });
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      // First visit: the worker claims this page once active.
      await new Promise((resolve) => navigator.serviceWorker.addEventListener("controllerchange", resolve, { once: true }));
    }
    return Boolean(navigator.serviceWorker.controller);
  } catch (err) {
    console.warn("service worker", err);
    return false;
  }
}

/** The review form: built once per incident page; update(incident) only sets which
 *  actions apply, so a live refresh never wipes a note being typed. */
function reviewForm(box, refresh) {
  let current = null;
  const note = h("textarea", { id: "note", rows: 3, maxlength: 2000, "aria-describedby": "note-hint" });
  const message = h("p", { class: "error", role: "alert" });
  const buttons = Object.keys(TRANSITIONS).map((action) =>
    h(
      "button",
      {
        type: "button",
        class: action === "resolve" || action === "acknowledge" ? "primary" : "secondary",
        disabled: true,
        dataset: { action },
        onclick: () => act(action),
      },
      t(`action.${action}`),
    ),
  );
  async function act(action) {
    message.textContent = "";
    buttons.forEach((b) => (b.disabled = true));
    const body = JSON.stringify({ action, note: note.value.trim() || null });
    const response = await api(`/incidents/${encodeURIComponent(current.id)}/review`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    if (response.ok) note.value = "";
    else {
      const err = await apiError(response);
      message.textContent = response.status === 409 ? t("incident.conflict", { detail: err.message }) : err.message;
    }
    await refresh();
  }
  box.replaceChildren(
    h("h2", { id: "review-title" }, t("incident.review")),
    h("label", { for: "note" }, t("incident.note")),
    note,
    h("p", { class: "hint", id: "note-hint" }, t("incident.note_hint")),
    h("div", { class: "actions" }, buttons),
    message,
  );
  return {
    update(incident) {
      current = incident;
      for (const button of buttons) button.disabled = !TRANSITIONS[button.dataset.action].includes(incident.status);
    },
  };
}

function renderHistory(box, incident) {
  const items = incident.history || [];
  box.replaceChildren(
    h("h2", { id: "history-title" }, t("incident.history")),
    items.length
      ? h(
          "table",
          { class: "history", id: "history" },
          h("thead", {}, h("tr", {}, ["history.at", "history.actor", "history.action", "history.note"].map((k) => h("th", { scope: "col" }, t(k))))),
          h("tbody", {}, items.map((item) =>
            h("tr", { dataset: { action: item.action } },
              h("td", {}, formatTime(item.at)),
              h("td", {}, item.actor),
              h("td", {}, actionName(item.action)),
              h("td", {}, item.note || "")))),
        )
      : h("p", { class: "hint" }, t("incident.no_history")),
  );
}

/** A history action in words; unknown ones (added server-side later) as they are. */
function actionName(action) {
  const text = t(`action.${action}`);
  return text === `action.${action}` ? action : text;
}

// -- Live view (WebRTC, WHEP) ----------------------------------------------------------------------

/** Start a WHEP session for a camera into video; returns {close()}. */
async function openLive(cameraId, video) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addEventListener("track", (e) => {
    video.srcObject = e.streams[0] || new MediaStream([e.track]);
    video.play().catch(() => {});
  });
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, 2000); // WHEP without trickle: send all candidates at once
  const response = await api(`/cameras/${encodeURIComponent(cameraId)}/webrtc`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    pc.close();
    throw await apiError(response);
  }
  const location_ = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  const session = {
    pc,
    closed: false,
    close() {
      if (session.closed) return;
      session.closed = true;
      pc.close();
      video.srcObject = null;
      liveSessions.delete(session);
      // keepalive: the DELETE still goes out when the tab is closing
      fetch(location_, {
        method: "DELETE",
        keepalive: true,
        headers: { Authorization: `Bearer ${state.token}` },
      }).catch(() => {});
    },
  };
  liveSessions.add(session);
  return session;
}

const liveSessions = new Set();
window.addEventListener("pagehide", () => {
  for (const session of [...liveSessions]) session.close();
});

/** Wait for ICE gathering: until complete, or shortly after the first candidate (host
 *  candidates come within milliseconds; a slow interface must not delay the picture). */
function iceGathered(pc, timeoutMs, settleMs = 200) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    let settle = null;
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    pc.addEventListener("icecandidate", (event) => {
      if (event.candidate && !settle) settle = setTimeout(resolve, settleMs);
    });
    setTimeout(resolve, timeoutMs);
  });
}

// -- Camera wall ----------------------------------------------------------------------------------------

function stateBadge(st) {
  const value = st?.state || "connecting";
  return badge("state", value, t(`camera.state.${value}`));
}

function renderWall() {
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
  let live = null;
  const tile = {
    id: camera.id,
    el,
    async refreshStatus() {
      try {
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

// -- Camera page -------------------------------------------------------------------------------------------

function renderCamera(id) {
  const camera = state.cameras.get(id);
  const video = h("video", { id: "live", muted: true, playsinline: true, autoplay: true, controls: false, "aria-label": t("camera.live") });
  const liveNote = h("p", { class: "hint", role: "status" });
  const button = h("button", { type: "button", class: "secondary" }, t("camera.live_stop"));
  const facts = h("dl", { class: "facts", id: "camera-status" });
  const recent = h("ul", { class: "recent" });
  show(
    h("p", {}, h("a", { href: "#/cameras" }, "← " + t("camera.back"))),
    h("h1", {}, camera?.name ?? id),
    h("div", { class: "incident" },
      h("section", { class: "media", "aria-label": t("camera.live") }, h("div", { class: "screen big" }, video), h("div", { class: "actions" }, button), liveNote),
      h("div", { class: "side-col" },
        h("section", { class: "card" }, h("h2", {}, t("camera.status")), facts),
        h("section", { class: "card" }, h("h2", {}, t("camera.recent")), recent))),
  );
  let live = null;
  let stopped = false;
  let retry = null;

  async function start() {
    liveNote.textContent = t("camera.live_connecting");
    try {
      live = await openLive(id, video);
      liveNote.textContent = "";
      button.textContent = t("camera.live_stop");
      live.pc.addEventListener("connectionstatechange", () => {
        if (["failed", "closed"].includes(live?.pc.connectionState) && !stopped) {
          live.close();
          live = null;
          retry = setTimeout(start, 3000);
        }
      });
    } catch (err) {
      liveNote.textContent = t("camera.live_failed", { detail: err.message });
      if (!stopped && err.status === 503) retry = setTimeout(start, 3000);
    }
  }
  button.addEventListener("click", () => {
    if (live) {
      live.close();
      live = null;
      button.textContent = t("camera.live_start");
    } else start();
  });

  async function refreshStatus() {
    try {
      // Over the last 24 h, or since the camera was added when that is more recent.
      const added = Date.parse(state.cameras.get(id)?.created_at ?? "") || 0;
      const since = new Date(Math.max(added, Date.now() - 864e5)).toISOString();
      const [st, availability] = await Promise.all([
        getJson(`/cameras/${encodeURIComponent(id)}/status`),
        getJson(`/cameras/availability?since=${encodeURIComponent(since)}`).catch(() => null),
      ]);
      const ratio = availability?.cameras?.find((c) => c.camera_id === id)?.ratio;
      const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
      facts.replaceChildren(
        ...row(t("camera.status"), stateBadge(st)),
        ...row(t("camera.fps"), st.fps ? st.fps.toFixed(1) : "—"),
        ...row(t("camera.last_frame"), st.last_frame_at ? formatTime(st.last_frame_at) : "—"),
        ...row(t("camera.reconnects"), String(st.reconnects ?? 0)),
        ...row(
          t("camera.availability"),
          ratio != null ? `${(ratio * 100).toFixed(1)} % (${t("camera.since", { time: formatTime(since) })})` : "—",
        ),
        ...(st.last_error ? row(t("camera.last_error"), st.last_error) : []),
      );
    } catch (err) {
      facts.replaceChildren(errorBox(err));
    }
  }
  async function loadRecent() {
    try {
      const page = await getJson(`/incidents?camera_id=${encodeURIComponent(id)}&limit=10`);
      recent.replaceChildren(
        ...page.items.map((i) =>
          h("li", {}, h("a", { href: `#/incidents/${encodeURIComponent(i.id)}` }, formatTime(i.started_at)), " ",
            badge("status", i.status, t(`status.${i.status}`)))),
      );
    } catch {
      /* optional */
    }
  }
  start();
  refreshStatus();
  loadRecent();
  const timer = setInterval(refreshStatus, STATUS_REFRESH_MS);
  return {
    onEvent(event) {
      if (event.data?.camera_id !== id) return;
      if (event.type.startsWith("camera.")) refreshStatus();
      else if (event.type.startsWith("incident.")) loadRecent();
    },
    cleanup() {
      stopped = true;
      clearTimeout(retry);
      clearInterval(timer);
      live?.close();
    },
  };
}

// -- Router and start ----------------------------------------------------------------------------------------

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
  else if (section === "cameras") state.view = id ? renderCamera(id) : renderWall();
  else {
    location.hash = "#/incidents";
    return;
  }
  main().focus({ preventScroll: true });
}

function setupLanguage() {
  const select = document.getElementById("lang");
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
  window.xlReady = true; // for tests: the console has started (not reloaded since)
}

start();
