// Live video over WebRTC (WHEP: one POST of the SDP offer, the answer back, DELETE to
// end), used by the camera wall's tiles and the camera page. Sessions still open when
// the tab goes are closed, so the service releases the camera's upstream.

import { api, apiError } from "./api.js";
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
