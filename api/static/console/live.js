// Live video over WebRTC (WHEP: one POST of the SDP offer, the answer back, DELETE to
// end), used by the camera wall's tiles and the camera page; a LiveView keeps one playing
// (reconnecting after drops). Sessions still open when the tab goes are closed, so the
// service releases the camera's upstream.

import { api, apiError } from "./api.js";
import { t } from "./i18n.js";
import { state } from "./state.js";

/** @typedef {{pc: RTCPeerConnection, closed: boolean, close(): void}} LiveSession */

/** The live sessions open in this tab (the wall limits how many).
 *  @type {Set<LiveSession>} */
export const liveSessions = new Set();
window.addEventListener("pagehide", () => {
  for (const session of [...liveSessions]) session.close();
});

/** Start a WHEP session for a camera into video; returns {close()}.
 *  @param {string} cameraId
 *  @param {HTMLVideoElement} video
 *  @returns {Promise<LiveSession>} */
export async function openLive(cameraId, video) {
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
  /** @type {LiveSession} */
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

/** Wait for ICE gathering: until complete, or shortly after the first candidate (host
 *  candidates come within milliseconds; a slow interface must not delay the picture).
 *  @param {RTCPeerConnection} pc
 *  @param {number} timeoutMs
 *  @returns {Promise<void>} */
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

// -- A live view kept playing ----------------------------------------------------------------

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 15000; // the cap: a view that keeps failing is retried this often
const RETRY_JITTER = 0.25; // tiles that dropped together (a switch rebooted) retry apart
const STABLE_MS = 10000; // playing this long counts as recovered: the backoff starts over
const STALL_MS = 6000; // no frame decoded for this long: the view dropped (frozen picture)
const DISCONNECTED_GRACE_MS = 2000; // ICE "disconnected" often heals by itself on a LAN
const WATCH_MS = 1000;

/** @typedef {"off" | "connecting" | "playing" | "waiting" | "failed"} LiveState */

/**
 * A camera's live view that reconnects by itself: a new WHEP session after the connection
 * fails or stays disconnected, the track ends, or no frame has been decoded for a while,
 * with capped exponential backoff plus jitter between attempts.
 *
 * The camera's state (`cameraState()`, from its status) decides the rest. While the camera
 * is offline the view holds no session and makes no attempt: the service would answer with
 * the last GOP it cached, replayed on every keyframe request of the browser — frames keep
 * being decoded (framesDecoded grows) while the picture is frozen. When the camera comes
 * back online the view reconnects at once. The video element is the caller's; `onChange`
 * hears every state change (to show it).
 */
export class LiveView {
  /**
   * @param {string} cameraId
   * @param {HTMLVideoElement} video
   * @param {(view: LiveView) => void} [onChange]
   */
  constructor(cameraId, video, onChange = () => {}) {
    this.cameraId = cameraId;
    this.video = video;
    this.onChange = onChange;
    /** @type {LiveState} */
    this.state = "off";
    /** Why the last attempt failed or the last session dropped: an i18n key of
     *  liveview.drop.* ("" when none), with the service's words in `detail`. */
    this.reason = "";
    this.detail = "";
    this.reconnects = 0; // sessions opened after the first
    this.opened = false; // a session was opened since start()
    /** @type {LiveSession | null} */
    this.session = null;
    this.failures = 0; // consecutive: drives the backoff
    this.playingSince = 0;
    this.lastFrames = 0;
    this.lastFrameAt = 0;
    /** @type {string | undefined} */
    this.camera = undefined; // the camera's state, as its status last said
    this.generation = 0; // bumped by each attempt and by stop(): stale callbacks do nothing
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.watchTimer = null;
  }

  /** Whether the view is meant to play (connecting, playing or waiting to retry). */
  get active() {
    return this.state !== "off" && this.state !== "failed";
  }

  /** Whether the camera is known to send nothing (offline, or disabled). */
  get cameraAway() {
    return this.camera === "offline" || this.camera === "disabled";
  }

  start() {
    if (this.active) return;
    this.failures = 0;
    this.opened = false;
    if (this.cameraAway) this.set("waiting", "liveview.drop.offline");
    else this.connect();
  }

  stop() {
    this.generation++;
    this.closeSession();
    clearTimeout(this.retryTimer);
    clearInterval(this.watchTimer);
    this.set("off", "");
  }

  /** The camera's state from its status: going offline drops the session, coming back
   *  online reconnects at once ("connecting" changes nothing: video may already flow).
   *  @param {string | undefined} cameraState */
  cameraState(cameraState) {
    const before = this.camera;
    this.camera = cameraState;
    if (!this.active || cameraState === before) return;
    if (this.cameraAway) this.retry("liveview.drop.offline");
    else if (cameraState === "online" && this.state === "waiting") {
      this.failures = 0;
      this.connect();
    }
  }

  async connect() {
    const generation = ++this.generation;
    clearTimeout(this.retryTimer);
    this.closeSession();
    this.set("connecting", this.reason);
    let session;
    try {
      session = await openLive(this.cameraId, this.video);
    } catch (err) {
      if (generation !== this.generation) return;
      this.detail = err.message;
      if (retryable(err)) this.retry("liveview.drop.error");
      else this.set("failed", "liveview.drop.error");
      return;
    }
    if (generation !== this.generation) {
      session.close(); // stopped (or restarted) while the offer was out
      return;
    }
    if (this.opened) this.reconnects++;
    this.opened = true;
    this.session = session;
    this.lastFrames = 0;
    this.lastFrameAt = Date.now(); // from now on a frame is due within STALL_MS
    this.watch(session, generation);
  }

  /** @param {LiveSession} session @param {number} generation */
  watch(session, generation) {
    const { pc } = session;
    /** @type {ReturnType<typeof setTimeout> | null} */
    let grace = null;
    pc.addEventListener("connectionstatechange", () => {
      if (generation !== this.generation) return;
      if (pc.connectionState === "failed") this.retry("liveview.drop.failed");
      else if (pc.connectionState === "disconnected") {
        grace ??= setTimeout(() => {
          grace = null;
          if (generation === this.generation && pc.connectionState !== "connected") this.retry("liveview.drop.lost");
        }, DISCONNECTED_GRACE_MS);
      }
    });
    for (const receiver of pc.getReceivers()) {
      receiver.track.addEventListener("ended", () => {
        if (generation === this.generation) this.retry("liveview.drop.ended");
      });
      // The service closing its end (DTLS close_notify) leaves the connection "connected"
      // until ICE consent runs out (~30 s); the DTLS transport says so at once.
      const dtls = receiver.transport;
      dtls?.addEventListener("statechange", () => {
        if (generation === this.generation && ["closed", "failed"].includes(dtls.state)) this.retry("liveview.drop.lost");
      });
    }
    clearInterval(this.watchTimer);
    this.watchTimer = setInterval(() => this.checkFrames(session, generation), WATCH_MS);
  }

  /** Follow the frames the browser decodes (getStats): playing, or stalled.
   *  @param {LiveSession} session @param {number} generation */
  async checkFrames(session, generation) {
    const frames = await framesDecoded(session.pc);
    if (generation !== this.generation) return;
    const now = Date.now();
    if (frames > this.lastFrames) {
      this.lastFrames = frames;
      this.lastFrameAt = now;
      if (this.state !== "playing") {
        this.playingSince = now;
        this.set("playing", "");
      } else if (this.failures && now - this.playingSince >= STABLE_MS) this.failures = 0;
    } else if (now - this.lastFrameAt >= STALL_MS) {
      this.retry("liveview.drop.stalled");
    }
  }

  /** Drop the session and try again after the backoff (when the camera is online; else
   *  once it is back).
   *  @param {string} reason a liveview.drop.* key */
  retry(reason) {
    const generation = ++this.generation;
    this.closeSession();
    clearInterval(this.watchTimer);
    clearTimeout(this.retryTimer);
    if (this.cameraAway) {
      this.set("waiting", "liveview.drop.offline");
      return;
    }
    this.failures++;
    const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (this.failures - 1));
    const delay = Math.round(base * (1 - RETRY_JITTER * Math.random()));
    this.set("waiting", reason);
    this.retryTimer = setTimeout(() => {
      if (generation === this.generation) this.connect();
    }, delay);
  }

  closeSession() {
    this.session?.close();
    this.session = null;
  }

  /** @param {LiveState} state @param {string} reason */
  set(state, reason) {
    if (this.state === state && this.reason === reason) return;
    this.state = state;
    this.reason = reason;
    this.onChange(this);
  }
}

/** What to tell the operator about a live view that is not playing ("" when it plays or
 *  is off).
 *  @param {LiveView} view */
export function liveText(view) {
  const reason = view.reason ? t(view.reason, { detail: view.detail }) : "";
  if (view.state === "connecting") return t("liveview.connecting");
  if (view.state === "waiting" && view.reason === "liveview.drop.offline") return t("liveview.offline");
  if (view.state === "waiting") return t("liveview.waiting", { reason });
  if (view.state === "failed") return t("liveview.failed", { reason });
  return "";
}

/** Whether opening a session may work later: the camera has no video yet (503), the
 *  service is busy or restarting, or the network failed; not a refusal (404, 422).
 *  @param {any} err */
function retryable(err) {
  const status = err?.status;
  return status === undefined || status === 408 || status === 429 || status >= 500;
}

/** Frames the browser decoded on this connection's inbound video (0 when none yet).
 *  @param {RTCPeerConnection} pc */
async function framesDecoded(pc) {
  let frames = 0;
  try {
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded ?? 0;
    });
  } catch {
    /* closed meanwhile */
  }
  return frames;
}
