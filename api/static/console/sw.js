// Service worker of the console: lets <video> and <img> load incident evidence with the
// operator's bearer token. Media elements cannot send an Authorization header, and the
// token must not go into URLs (logs, history, Referer). This worker adds the header to
// same-origin evidence requests, keeping their Range header, so the browser streams and
// seeks clips with HTTP Range requests. It asks the page for the token each time (the
// token lives in the tab's sessionStorage; a worker may be stopped and restarted at will).

const EVIDENCE = /^\/api\/v1\/incidents\/[^/]+\/(clip|snapshot)$/;
const ASK_TIMEOUT_MS = 2000;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (
    request.method !== "GET" ||
    url.origin !== self.location.origin ||
    !EVIDENCE.test(url.pathname) ||
    request.headers.has("Authorization")
  ) {
    return; // everything else goes to the network untouched
  }
  event.respondWith(withToken(event));
});

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

async function askToken(clientId) {
  const client = clientId ? await self.clients.get(clientId) : null;
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
