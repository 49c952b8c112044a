// An incident's evidence in the page: the snapshot and the clip, from the object store's
// presigned URL when it gives one, else from the API (the clip streamed through the
// service worker sw.js, which adds the token; without one, fetched whole into a blob).

import { API, blobUrl, getJson } from "./api.js";
import { state } from "./state.js";

/** Where the object store serves this evidence directly (a presigned URL), or null when
 *  the API serves it. A fetch that follows the API's redirect to the store fails CORS
 *  (browsers send no Origin after a same-origin to cross-origin redirect), while an
 *  <img> or <video> loads the presigned URL itself (its origin is in the page's CSP).
 *  @param {string} url
 *  @returns {Promise<string | null>} */
async function directUrl(url) {
  const link = await getJson(`${url.replace(API, "")}/link`);
  return link.expires_at ? link.url : null;
}

/** An src for a snapshot: the store's presigned URL, or the bytes as a blob: URL.
 *  @param {string} url
 *  @param {string[]} urls blob: URLs to revoke when the page goes */
export async function evidenceSrc(url, urls) {
  const direct = await directUrl(url);
  if (direct) return direct;
  const blob = await blobUrl(url.replace(API, ""));
  urls.push(blob);
  return blob;
}

/** Play from the object store when it presigns (its URL expires: a failed load after that
 *  asks for a fresh one and resumes); otherwise stream the clip through the service worker
 *  (Range requests, seekable while loading); without one (plain-HTTP LAN address: no
 *  secure context) fetch it whole into a blob.
 *  @param {HTMLVideoElement} video
 *  @param {string} url
 *  @param {string[]} urls blob: URLs to revoke when the page goes */
export async function playClip(video, url, urls) {
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

/** @type {Promise<boolean> | null} */
let workerReady = null;
const WORKER_WAIT_MS = 3000;

/** Whether the evidence service worker controls this page (registered on first use).
 *  @returns {Promise<boolean>} */
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
