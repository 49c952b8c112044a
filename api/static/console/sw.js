// Service worker of the console: lets <video> and <img> load incident evidence with the
// operator's bearer token. Media elements cannot send an Authorization header, and the
// token must not go into URLs (logs, history, Referer). This worker adds the header to
// same-origin evidence requests, keeping their Range header, so the browser streams and
// seeks clips with HTTP Range requests. It asks the page for the token each time (the
// token lives in the tab's sessionStorage; a worker may be stopped and restarted at will).

// Type-checked with the WebWorker library (tsconfig.sw.json), whose `self` is any worker's.
const worker = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));

const EVIDENCE = /^\/api\/v1\/incidents\/[^/]+\/(clip|snapshot)$/;
const ASK_TIMEOUT_MS = 2000;

worker.addEventListener("install", () => worker.skipWaiting());
worker.addEventListener("activate", (event) => event.waitUntil(worker.clients.claim()));

worker.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (
    request.method !== "GET" ||
    url.origin !== worker.location.origin ||
    !EVIDENCE.test(url.pathname) ||
    request.headers.has("Authorization")
  ) {
    return; // everything else goes to the network untouched
  }
  event.respondWith(withToken(event));
});

/** @param {FetchEvent} event */
async function withToken(event) {
  const token = await askToken(event.clientId || event.resultingClientId);
  const headers = new Headers(event.request.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  return fetch(event.request.url, {
    headers,
    credentials: "omit",
    cache: "no-store",
    redirect: "follow",
  });
}

/**
 * @param {string} clientId
 * @returns {Promise<string | null>}
 */
async function askToken(clientId) {
  const client = clientId ? await worker.clients.get(clientId) : null;
  if (!client) return null;
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(() => resolve(null), ASK_TIMEOUT_MS);
    channel.port1.onmessage = (message) => {
      clearTimeout(timer);
      resolve(typeof message.data === "string" ? message.data : null);
    };
    client.postMessage({ type: "xl-token?" }, [channel.port2]);
  });
}
