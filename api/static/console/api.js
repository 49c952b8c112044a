// The service's API as the console uses it: fetch with the operator's bearer token (a 401
// signs out), errors, authorised blobs, and the live event stream (SSE read with fetch():
// EventSource cannot send an Authorization header), shown in the header's live state.

import { t } from "./i18n.js";
import { TOKEN_KEY, route, state } from "./state.js";

/**
 * A camera as GET /cameras lists it (the fields the console reads).
 * @typedef {{id: string, name: string, grid_code?: string | null, created_at?: string,
 *   state?: string}} Camera
 */
/**
 * A grid as GET /grids lists it.
 * @typedef {{code: string, name?: string | null, parent_code?: string | null}} Grid
 */
/**
 * An incident's evidence clip.
 * @typedef {{state: "pending" | "archived" | "failed", url?: string | null, sha256?: string | null,
 *   error?: string | null}} Clip
 */
/**
 * One review action in an incident's history.
 * @typedef {{at: string, actor: string, action: string, note?: string | null}} HistoryItem
 */
/**
 * An incident as GET /incidents and GET /incidents/{id} return it.
 * @typedef {{id: string, camera_id: string, type: string, status: string, started_at: string,
 *   ended_at?: string | null, grid_code?: string | null, peak_persons?: number | null,
 *   case_ids?: string[], clip?: Clip | null, snapshot?: {url?: string | null} | null,
 *   history?: HistoryItem[]}} Incident
 */
/**
 * An event class of the grid platform, as GET /cases/classes lists it.
 * @typedef {{code: string, name: string, category: string, deadlines_s: Record<string, number>}} EventClass
 */
/**
 * A case as GET /cases lists it: where it is in the grid platform's handling (state).
 * @typedef {{id: string, external_ref: string, title: string, kind: string, grid_code?: string | null,
 *   status: "open" | "closed", state: string, class_code?: string | null,
 *   location?: {lat: number, lon: number} | null, camera_national_id?: string | null,
 *   assignee?: string | null, deadline_at?: string | null, overdue: boolean, created_at: string,
 *   updated_at: string, closed_at?: string | null, incident_ids: string[]}} Case
 */
/**
 * One step of a case's handling (from is null for its creation).
 * @typedef {{at: string, actor: string, from?: string | null, to: string, note?: string | null,
 *   assignee?: string | null, deadline_at?: string | null}} CaseStep
 */
/**
 * A case as GET /cases/{id} and its transitions return it.
 * @typedef {Case & {incidents: Incident[], evidence: {incident_id: string, clip_url?: string | null,
 *   sha256?: string | null}[], timeline: CaseStep[]}} CaseDetail
 */
/**
 * A camera's state from GET /cameras/{id}/status.
 * @typedef {{state?: string, fps?: number | null, last_frame_at?: string | null,
 *   reconnects?: number | null, last_error?: string | null}} CameraStatus
 */
/**
 * An event of the live stream: {type: "incident.created" | "camera.online" | …, data}.
 * @typedef {{type: string, data?: Record<string, any>}} LiveEvent
 */

export const API = "/api/v1";

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {unknown} detail
   */
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

/**
 * fetch() an API path with the operator's token; a 401 signs out.
 * @param {string} path
 * @param {RequestInit} [options]
 */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(API + path, { ...options, headers, cache: "no-store" });
  if (response.status === 401 && state.token) {
    logout();
    throw new ApiError(401, t("login.bad"));
  }
  return response;
}

/** @param {Response} response */
export async function apiError(response) {
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, detail);
}

/**
 * @param {string} path
 * @param {RequestInit} [options]
 * @returns {Promise<any>}
 */
export async function getJson(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw await apiError(response);
  return response.json();
}

/**
 * Fetch an authorised image/clip into a blob: URL (revoke it when done).
 * @param {string} path
 */
export async function blobUrl(path) {
  const response = await api(path);
  if (!response.ok) throw await apiError(response);
  return URL.createObjectURL(await response.blob());
}

// -- Session ---------------------------------------------------------------------------------------

export function logout() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  events.abort?.abort();
  location.hash = "#/login";
  route();
}

// -- Live events (SSE over fetch) ------------------------------------------------------------------

const events = {
  /** @type {string | null} */
  lastId: null,
  /** @type {AbortController | null} */
  abort: null,
  generation: 0,
};

/** Follow the event stream while signed in, reconnecting with backoff (resuming by id). */
export async function runEvents() {
  const generation = ++events.generation; // a new sign-in ends the previous loop
  let delay = 1000;
  while (state.token && generation === events.generation) {
    events.abort = new AbortController();
    try {
      /** @type {Record<string, string>} */
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

/**
 * @param {ReadableStream<BufferSource>} body
 * @param {(event: LiveEvent) => void} handle
 */
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

/**
 * @param {string} block
 * @param {(event: LiveEvent) => void} handle
 */
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

/** @param {LiveEvent} event */
function dispatchEvent_(event) {
  if (event.type === "camera.online" || event.type === "camera.offline") {
    const camera = state.cameras.get(event.data.camera_id);
    if (camera) camera.state = event.type.slice("camera.".length);
  }
  state.view?.onEvent?.(event);
}

/** Show in the header whether live updates flow. */
export function setLive(on) {
  const el = document.getElementById("live-state");
  el.hidden = false;
  el.className = `live-state ${on ? "on" : "off"}`;
  el.textContent = t(on ? "live.connected" : "live.reconnecting");
  el.dataset.live = on ? "1" : "0";
}
