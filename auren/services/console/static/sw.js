// The console's service worker: keeps the page and its assets so that the console opens
// without the network (it then says the gateway is unreachable). The data behind the login
// (/console/api/*, the reports) is never cached: it always comes from the gateway.
"use strict";
const CACHE = "auren-console-v1";
const SHELL = [
  "/",
  "/console/static/console.js",
  "/console/static/console.css",
  "/console/static/vendor/uPlot.iife.min.js",
  "/console/static/vendor/uPlot.min.css",
  "/console/static/manifest.webmanifest",
  "/console/static/icons/icon.svg",
  "/console/static/icons/icon-192.png",
  "/console/static/icons/icon-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL))
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin ||
      !SHELL.includes(url.pathname)) {
    return; // the network, as if there were no worker
  }
  // Network first, so that a new version is used at once; the cache when it fails.
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(event.request, copy));
    }
    return response;
  }).catch(() => caches.match(event.request)));
});
