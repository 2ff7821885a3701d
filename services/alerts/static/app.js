// facemask live dashboard: camera tiles refreshed a few times per second, an alert feed fed by
// server-sent events. No framework, no build step, no CDN. Authorisation, when the service
// requires a token, travels in the HttpOnly cookie set by opening /?token=... once.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = {
  config: { latest_interval_s: 0.3, compliance_window_s: 60 },
  tiles: new Map(),        // camera id -> {el, loop, etag, url}
  alerts: new Map(),       // alert id -> element
  lastSeq: 0,
  oldestCursor: null,
  events: null,
  serverOffset: 0,         // server clock - browser clock (s)
};

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    location.replace("/");  // the sign-in page
    throw new Error("unauthorised");
  }
  return response;
}

function now() { return Date.now() / 1000 + state.serverOffset; }

function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, now() - ts);
  if (s < 2) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function percent(ratio) { return ratio === null || ratio === undefined ? "–" : `${Math.round(ratio * 100)}%`; }

// -- cameras -----------------------------------------------------------------------------

function makeTile(camera) {
  const el = $("#tile-template").content.firstElementChild.cloneNode(true);
  el.dataset.camera = camera.id;
  const tile = { el, etag: null, url: null, timer: null, busy: false, camera };
  state.tiles.set(camera.id, tile);
  $("#grid").appendChild(el);
  refreshPicture(tile);
  return tile;
}

async function refreshPicture(tile) {
  clearTimeout(tile.timer);
  const delay = Math.max(150, state.config.latest_interval_s * 1000);
  if (document.hidden || !state.tiles.has(tile.camera.id)) {
    tile.timer = setTimeout(() => refreshPicture(tile), 1000);
    return;
  }
  try {
    const response = await api(`/api/cameras/${encodeURIComponent(tile.camera.id)}/latest.jpg`,
      { cache: "no-cache" });
    const etag = response.headers.get("ETag");
    if (response.ok && etag !== tile.etag) {
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const img = $(".picture", tile.el);
      await new Promise((resolve) => { img.onload = img.onerror = resolve; img.src = url; });
      if (tile.url) URL.revokeObjectURL(tile.url);
      tile.url = url;
      tile.etag = etag;
      tile.el.classList.add("has-picture");
    }
  } catch (err) {
    // offline or restarting: keep the last picture and try again
  }
  tile.timer = setTimeout(() => refreshPicture(tile), tile.camera.online ? delay : 2000);
}

function updateTile(tile, camera) {
  tile.camera = camera;
  const el = tile.el;
  el.classList.toggle("offline", camera.status === "offline");
  el.classList.toggle("degraded", camera.status !== "offline" && camera.status !== "up");
  $(".name", el).textContent = camera.name || camera.id;
  $(".place", el).textContent = camera.location || "";
  $(".badge", el).textContent = camera.status === "up" ? "online" : camera.status;
  $(".picture", el).alt = `Latest frame of ${camera.name || camera.id}`;
  const meter = $(".meter", el);
  const ratio = camera.compliance;
  $(".fill", el).style.width = ratio === null ? "0" : `${Math.round(ratio * 100)}%`;
  meter.classList.toggle("mid", ratio !== null && ratio < 0.9 && ratio >= 0.6);
  meter.classList.toggle("low", ratio !== null && ratio < 0.6);
  meter.setAttribute("aria-valuenow", ratio === null ? "0" : String(Math.round(ratio * 100)));
  meter.title = ratio === null ? "no face in the window"
    : `${camera.masked} of ${camera.faces} faces masked over ${camera.window_s} s`;
  $(".compliance", el).textContent = ratio === null ? "no faces" : `${percent(ratio)} masked`;
  $(".fps", el).textContent = `${camera.fps.toFixed(1)} fps`;
  $(".alerts-24h", el).textContent = camera.alerts_24h
    ? `${camera.alerts_24h} alert${camera.alerts_24h === 1 ? "" : "s"} / 24 h` : "";
  $(".nopic", el).textContent = camera.status === "offline" ? "camera offline" : "waiting for the first frame";
  $(".seen", el).textContent = camera.status === "up" ? `seen ${ago(camera.last_seen)}`
    : `last seen ${ago(camera.last_seen)}`;
  const alerting = camera.last_alert_ts && now() - camera.last_alert_ts < 10;
  el.classList.toggle("alerting", Boolean(alerting));
}

const MAX_TILES = 1000;       // the dashboard shows at most this many cameras
const CAMERA_PAGE = MAX_TILES; // cameras per /api/cameras request (the API's largest page):
                               // one request per refresh, each builds the whole board

// Every page of /api/cameras (ids sorted, next_cursor = the last id of a page), up to
// MAX_TILES cameras; null when a page failed (the next tick tries again).
async function fetchCameras() {
  const cameras = [];
  let cursor = null, body = null;
  do {
    const query = new URLSearchParams({ limit: String(CAMERA_PAGE) });
    if (cursor) query.set("cursor", cursor);
    const response = await api(`/api/cameras?${query}`);
    if (!response.ok) return null;
    body = await response.json();
    cameras.push(...body.cameras);
    cursor = body.next_cursor;
  } while (cursor && cameras.length < MAX_TILES);
  return { now: body.now, total: body.total, cameras: cameras.slice(0, MAX_TILES) };
}

async function loadCameras() {
  try {
    const body = await fetchCameras();
    if (!body) return;
    state.serverOffset = body.now - Date.now() / 1000;
    const seen = new Set();
    let online = 0, masked = 0, faces = 0, alerts = 0;
    for (const camera of body.cameras) {
      seen.add(camera.id);
      const tile = state.tiles.get(camera.id) || makeTile(camera);
      updateTile(tile, camera);
      if (camera.online) online += 1;
      masked += camera.masked;
      faces += camera.faces;
      alerts += camera.alerts_24h;
    }
    for (const [id, tile] of state.tiles) {
      if (!seen.has(id)) { clearTimeout(tile.timer); tile.el.remove(); state.tiles.delete(id); }
    }
    $("#no-cameras").hidden = body.cameras.length > 0;
    const shown = body.total > body.cameras.length ? ` (first ${body.cameras.length} shown)` : "";
    $("#total-online").textContent = `${online} / ${body.total}${shown}`;
    $("#total-compliance").textContent = faces ? percent(masked / faces) : "–";
    $("#total-alerts").textContent = String(alerts);
  } catch (err) {
    // retried on the next tick
  }
}

// -- alerts ------------------------------------------------------------------------------

function alertElement(alert, fresh) {
  const el = $("#alert-template").content.firstElementChild.cloneNode(true);
  el.id = `alert-${alert.id}`;
  el.dataset.seq = alert.seq;
  const thumb = $(".thumb", el);
  if (alert.thumbnail_url) {
    thumb.src = alert.thumbnail_url;
    thumb.alt = `Snapshot of alert at ${alert.camera_name}`;
  } else {
    thumb.classList.add("missing");
    thumb.alt = "no snapshot";
  }
  $(".where", el).textContent = alert.place ? `${alert.camera_name} · ${alert.place}` : alert.camera_name;
  const when = $(".when", el);
  when.dateTime = alert.time;
  when.dataset.ts = alert.ts;
  when.textContent = `${clock(alert.ts)} · ${ago(alert.ts)}`;
  $(".score", el).textContent = alert.score.toFixed(2);
  $(".open", el).addEventListener("click", () => showAlert(alert));
  if (fresh) el.classList.add("fresh");
  return el;
}

function addAlert(alert, { fresh = false, append = false } = {}) {
  if (state.alerts.has(alert.id)) return;
  const el = alertElement(alert, fresh);
  const list = $("#alerts");
  if (append) {
    list.appendChild(el);
  } else {
    // keep newest first even when events arrive out of order
    const after = [...list.children].find((child) => Number(child.dataset.seq) < alert.seq);
    list.insertBefore(el, after || null);
  }
  state.alerts.set(alert.id, el);
  state.lastSeq = Math.max(state.lastSeq, alert.seq);
  $("#no-alerts").hidden = true;
  if (fresh) {
    const tile = state.tiles.get(alert.camera_id);
    if (tile) tile.el.classList.add("alerting");
    const badge = $("#feed-count");
    badge.textContent = String(Number(badge.textContent || 0) + 1);
  }
}

function showAlert(alert) {
  const dialog = $("#viewer");
  const img = $("#viewer-img");
  img.hidden = !alert.snapshot_url;
  if (alert.snapshot_url) img.src = alert.snapshot_url;
  $("#viewer-text").textContent =
    `${alert.message} · ${new Date(alert.ts * 1000).toLocaleString()} · score ${alert.score.toFixed(2)}`;
  if (typeof dialog.showModal === "function") dialog.showModal();
  $("#feed-count").textContent = "";
}

async function loadAlerts(cursor) {
  const params = new URLSearchParams({ limit: "30" });
  if (cursor) params.set("cursor", cursor);
  const response = await api(`/api/alerts?${params}`);
  if (!response.ok) return;
  const body = await response.json();
  for (const alert of body.alerts) addAlert(alert, { append: Boolean(cursor) });
  state.oldestCursor = body.next_cursor;
  $("#more").hidden = !body.next_cursor;
  $("#no-alerts").hidden = state.alerts.size > 0;
}

function connectEvents() {
  const live = $("#live");
  const setLive = (name, label) => { live.dataset.state = name; $(".label", live).textContent = label; };
  const source = new EventSource(`/api/events?last_event_id=${state.lastSeq}`);
  state.events = source;
  source.onopen = () => setLive("live", "live");
  source.onerror = () => setLive(source.readyState === EventSource.CLOSED ? "offline" : "connecting",
    source.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
  source.addEventListener("alert", (event) => {
    const alert = JSON.parse(event.data);
    addAlert(alert, { fresh: true });
  });
}

function tickTimes() {
  for (const el of state.alerts.values()) {
    const when = $(".when", el);
    when.textContent = `${clock(Number(when.dataset.ts))} · ${ago(Number(when.dataset.ts))}`;
  }
}

async function main() {
  try {
    const response = await api("/api/config");
    if (response.ok) state.config = await response.json();
  } catch (err) { /* defaults */ }
  await loadCameras();
  try { await loadAlerts(null); } catch (err) { /* the feed fills from events */ }
  connectEvents();
  // An EventSource closed for good (e.g. an HTTP error while the service restarted) is reopened.
  setInterval(() => {
    if (state.events && state.events.readyState === EventSource.CLOSED) connectEvents();
  }, 5000);
  setInterval(loadCameras, 2000);
  setInterval(tickTimes, 5000);
  $("#more").addEventListener("click", () => loadAlerts(state.oldestCursor));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) for (const tile of state.tiles.values()) refreshPicture(tile);
  });
}

main();
