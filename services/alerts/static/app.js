// facemask live dashboard: camera tiles driven by each camera's state, a large camera view
// with its zone editor (#camera/<id>), and an alert feed with filters and review buttons fed
// by server-sent events. No framework, no build step, no CDN. Authorisation, when the
// service requires a token, travels in the HttpOnly cookie set by opening /?token=... once;
// every request here is same-origin and sends it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const enc = encodeURIComponent;

/** Camera states of the API (``state``): the badge text and the tone of the tile. */
const STATES = {
  live: { label: "live", tone: "ok" },
  not_analysed: { label: "not analysed", tone: "warn" },
  no_frames: { label: "no frames", tone: "bad" },
  offline: { label: "offline", tone: "off" },
};
const REVIEW_LABELS = {
  new: "new",
  acknowledged: "acknowledged",
  confirmed: "confirmed",
  false_positive: "false positive",
};
const FALSE_POSITIVE_LABELS = { mask: "masked face", none: "not a person" };
const ZONE_KINDS = {
  ignore: { label: "Ignore mask", prefix: "mask", fill: "rgba(239, 68, 68, .30)", line: "#f87171" },
  include: { label: "Include zone", prefix: "zone", fill: "rgba(34, 197, 94, .22)", line: "#4ade80" },
};
const MAX_POINTS = 64;         // per polygon (the API's limit)
const MAX_POLYGONS = 32;       // per list (ignore masks, include zones)
const CLOSE_RADIUS_PX = 14;    // a click this close to the first point closes the polygon
const UNREACHABLE_AFTER_MS = 6000;
const MAX_TILES = 1000;        // the dashboard shows at most this many cameras
const CAMERA_PAGE = MAX_TILES; // cameras per /api/cameras request (the API's largest page)

const state = {
  config: { latest_interval_s: 0.3, compliance_window_s: 60 },
  cameras: new Map(),      // camera id -> the camera as /api/cameras shows it
  tiles: new Map(),        // camera id -> {el, pictures: PictureLoop}
  feed: new Map(),         // alert id -> its <li> in the feed
  feedGeneration: 0,       // bumped when the filters change: older answers are dropped
  lastSeq: 0,
  oldestCursor: null,
  events: null,
  serverOffset: 0,         // server clock - browser clock (s)
  boardOkAt: Date.now(),   // the last successful /api/cameras
  modals: [],              // open modal dialogs, topmost last
  removed: new Map(),      // camera id -> when this page removed it (Date.now())
  filterKey: "",           // the cameras the camera filter lists
};

// -- helpers -----------------------------------------------------------------------------

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

function stateOf(camera) {
  return STATES[camera && camera.state] || { label: (camera && camera.state) || "unknown", tone: "warn" };
}

/** "not analysed since 12:03:04" (or without the time when the API gives none). */
function sinceText(camera) {
  const { label } = stateOf(camera);
  return camera.state_since ? `${label} since ${clock(camera.state_since)}` : label;
}

/** A read of the API; a 401 (token expired or changed) goes to the sign-in page. */
async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    location.replace("/");
    throw new Error("unauthorised");
  }
  return response;
}

class ApiError extends Error {}

/** The readable sentence of an error answer ({"detail", "message"}) for ``status``. */
async function problemText(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body.message || (typeof body.detail === "string" ? body.detail : "");
  } catch (err) { /* not JSON */ }
  switch (response.status) {
    case 401:
      return "This change needs the API token: sign in by opening the dashboard as /?token=<token>.";
    case 403:
      return `Not allowed${message ? `: ${message}` : ""}.`;
    case 422:
      return `Rejected: ${message || "invalid input"}.`;
    default:
      return message ? `${message} (HTTP ${response.status})` : `The service answered HTTP ${response.status}.`;
  }
}

/** A write (POST, PUT, DELETE) with a JSON body; resolves with the JSON answer (null for
 * 204) or rejects with an ApiError whose message says what went wrong. */
async function send(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError("The alert service cannot be reached: try again.");
  }
  if (!response.ok) throw new ApiError(await problemText(response));
  return response.status === 204 ? null : response.json();
}

/** A message for the user, shown above whatever dialog is open. */
let noticeTimer = null;
function notify(text, tone = "error") {
  const notice = $("#notice");
  const top = state.modals[state.modals.length - 1];
  (top || document.body).appendChild(notice);   // inside the top dialog, or it is inert
  notice.dataset.tone = tone;
  $(".text", notice).textContent = text;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.hidden = true; }, tone === "error" ? 12000 : 5000);
}

/** showModal with the bookkeeping: the stack of open dialogs, focus back to ``opener``. */
function openModal(dialog, opener) {
  if (dialog.open) return;
  dialog.opener = opener || document.activeElement;
  dialog.showModal();
  state.modals.push(dialog);
}

for (const dialog of $$("dialog")) {
  dialog.addEventListener("close", () => {
    state.modals = state.modals.filter((d) => d !== dialog);
    const opener = dialog.opener;
    dialog.opener = null;
    if (opener && opener.isConnected) opener.focus();
  });
  const close = $(".close", dialog);
  if (close && dialog.id !== "camera-view") close.addEventListener("click", () => dialog.close());
}

// -- pictures ----------------------------------------------------------------------------

/** Keeps an <img> showing a camera's latest.jpg: polls it (If-None-Match) only while the
 * camera ``has_frame``, every ``interval(camera)`` ms, never while the page is hidden. */
class PictureLoop {
  constructor(img, { interval, onPicture = () => {} }) {
    this.img = img;
    this.interval = interval;
    this.onPicture = onPicture;
    this.camera = null;
    this.etag = null;
    this.url = null;
    this.active = false;
    this.stopped = false;
    this.timer = null;
    this.wake = null;
  }

  /** Follow ``camera`` (its latest facts): start polling when it has a frame. */
  follow(camera) {
    if (this.camera && this.camera.id !== camera.id) this.clear();
    this.camera = camera;
    this.stopped = false;
    if (camera.has_frame && !this.active) this.loop();
  }

  stop() {
    this.stopped = true;
    this.poke();
  }

  /** Fetch now rather than at the end of the current wait. */
  poke() {
    clearTimeout(this.timer);
    if (this.wake) this.wake();
  }

  clear() {
    this.img.removeAttribute("src");
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.etag = null;
  }

  async loop() {
    this.active = true;
    try {
      while (!this.stopped && this.camera && this.camera.has_frame) {
        if (!document.hidden) await this.fetchOnce(this.camera);
        if (this.stopped) break;
        await new Promise((resolve) => {
          this.wake = resolve;
          this.timer = setTimeout(resolve, this.interval(this.camera));
        });
        this.wake = null;
      }
    } finally {
      this.active = false;
    }
  }

  async fetchOnce(camera) {
    try {
      const headers = this.etag ? { "If-None-Match": this.etag } : {};
      const response = await api(`/api/cameras/${enc(camera.id)}/latest.jpg`, { headers, cache: "no-store" });
      // Read even when unused (304: unchanged): an unread answer ends as an aborted request.
      const blob = await response.blob();
      if (response.status !== 200 || this.stopped || this.camera.id !== camera.id) return;
      const url = URL.createObjectURL(blob);
      const shown = await new Promise((resolve) => {
        this.img.onload = () => resolve(true);
        this.img.onerror = () => resolve(false);
        this.img.src = url;
      });
      if (this.url) URL.revokeObjectURL(this.url);
      this.url = url;
      this.etag = response.headers.get("ETag");
      if (shown) this.onPicture(this.img);
    } catch (err) {
      // offline or restarting: keep the last picture and try again
    }
  }
}

/** Milliseconds between two pictures of ``camera``: at most its analysed rate. */
function pictureInterval(camera, floorMs) {
  if (camera.state !== "live") return 2000;   // a frozen picture: look now and then
  const rate = camera.fps > 0 ? camera.fps : (camera.configured_fps || 1);
  return Math.max(floorMs, state.config.latest_interval_s * 1000, 1000 / rate);
}

// -- cameras -----------------------------------------------------------------------------

function makeTile(camera) {
  const el = $("#tile-template").content.firstElementChild.cloneNode(true);
  el.dataset.camera = camera.id;
  const pictures = new PictureLoop($(".picture", el), {
    interval: (c) => pictureInterval(c, 150),
    onPicture: () => el.classList.add("has-picture"),
  });
  const tile = { el, pictures };
  $(".frame", el).addEventListener("click", () => openCamera(camera.id));
  $(".remove-camera", el).addEventListener("click", (event) =>
    removeCamera(state.cameras.get(camera.id) || camera, event.currentTarget));
  state.tiles.set(camera.id, tile);
  return tile;
}

function updateTile(tile, camera) {
  const el = tile.el;
  const { label, tone } = stateOf(camera);
  const name = camera.name || camera.id;
  const live = camera.state === "live";
  el.dataset.state = camera.state;
  el.dataset.tone = tone;
  el.classList.toggle("offline", camera.state === "offline");
  el.classList.toggle("degraded", !live && camera.state !== "offline");
  $(".name", el).textContent = name;
  $(".place", el).textContent = camera.location || "";
  $(".badge", el).textContent = label;
  $(".frame", el).setAttribute("aria-label", `Open the camera view of ${name} (${label})`);
  $(".picture", el).alt = live ? `Latest frame of ${name}` : `Last frame of ${name}, ${sinceText(camera)}`;
  $(".reason", el).textContent = live ? "" : camera.state_reason || "";
  $(".stale", el).textContent = live ? "" : sinceText(camera);
  $(".nopic", el).textContent = camera.has_frame ? "loading the picture…"
    : live ? "waiting for the first frame" : sinceText(camera);
  const meter = $(".meter", el);
  const ratio = camera.compliance;
  $(".fill", el).style.width = ratio === null ? "0" : `${Math.round(ratio * 100)}%`;
  meter.classList.toggle("mid", ratio !== null && ratio < 0.9 && ratio >= 0.6);
  meter.classList.toggle("low", ratio !== null && ratio < 0.6);
  meter.setAttribute("aria-valuenow", ratio === null ? "0" : String(Math.round(ratio * 100)));
  meter.setAttribute("aria-label", `Compliance of ${name}`);
  meter.title = ratio === null ? "no face in the window"
    : `${camera.masked} of ${camera.faces} faces masked over ${camera.window_s} s`;
  $(".compliance", el).textContent = ratio === null ? "no faces" : `${percent(ratio)} masked`;
  $(".fps", el).textContent = `${camera.fps.toFixed(1)} fps`;
  $(".alerts-24h", el).textContent = camera.alerts_24h
    ? `${camera.alerts_24h} alert${camera.alerts_24h === 1 ? "" : "s"} / 24 h` : "";
  $(".seen", el).textContent = live ? `seen ${ago(camera.last_seen)}` : `last seen ${ago(camera.last_seen)}`;
  $(".remove-camera", el).hidden = camera.state !== "offline";
  const alerting = camera.last_alert_ts && now() - camera.last_alert_ts < 10;
  el.classList.toggle("alerting", Boolean(alerting));
  tile.pictures.follow(camera);
}

function forgetTile(id) {
  const tile = state.tiles.get(id);
  if (!tile) return;
  tile.pictures.stop();
  tile.pictures.clear();
  tile.el.remove();
  state.tiles.delete(id);
  state.cameras.delete(id);
}

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

/** The banner saying that what the board shows is not current (the service is silent). */
function boardReachable(ok) {
  if (ok) state.boardOkAt = Date.now();
  const silent = Date.now() - state.boardOkAt > UNREACHABLE_AFTER_MS;
  const banner = $("#unreachable");
  if (silent && banner.hidden) {
    banner.textContent = `The alert service has not answered since ${clock(state.boardOkAt / 1000)}: `
      + "the pictures and states below are not current.";
  }
  banner.hidden = !silent;
  document.body.classList.toggle("unreachable", silent);
}

async function loadCameras() {
  let body = null;
  try {
    body = await fetchCameras();
  } catch (err) {
    // retried on the next tick
  }
  boardReachable(Boolean(body));
  if (!body) return;
  state.serverOffset = body.now - Date.now() / 1000;
  const seen = new Set();
  let live = 0, masked = 0, faces = 0, alerts = 0;
  let previous = $("#no-cameras");
  for (const [id, when] of state.removed) if (Date.now() - when > 10000) state.removed.delete(id);
  for (const camera of body.cameras) {
    if (state.removed.has(camera.id)) continue;   // an answer older than the removal
    seen.add(camera.id);
    state.cameras.set(camera.id, camera);
    const tile = state.tiles.get(camera.id) || makeTile(camera);
    if (previous.nextElementSibling !== tile.el) previous.after(tile.el);  // keep the API's order
    previous = tile.el;
    updateTile(tile, camera);
    if (camera.state === "live") live += 1;
    masked += camera.masked;
    faces += camera.faces;
    alerts += camera.alerts_24h;
  }
  for (const id of [...state.tiles.keys()]) if (!seen.has(id)) forgetTile(id);
  $("#no-cameras").hidden = body.cameras.length > 0;
  const shown = body.total > body.cameras.length ? ` (first ${body.cameras.length} shown)` : "";
  $("#total-online").textContent = `${live} / ${body.total}${shown}`;
  $("#total-compliance").textContent = faces ? percent(masked / faces) : "–";
  $("#total-alerts").textContent = String(alerts);
  updateCameraFilter(body.cameras);
  if (view.cameraId) renderViewCamera();
}

function updateCameraFilter(cameras) {
  const select = $("#filters").elements.camera;
  const key = JSON.stringify(cameras.map((c) => [c.id, c.name]));
  if (state.filterKey === key) return;   // the same cameras: keep the open list as it is
  state.filterKey = key;
  const chosen = select.value;
  const options = [new Option("All cameras", "")];
  for (const camera of cameras) options.push(new Option(camera.name || camera.id, camera.id));
  if (chosen && !cameras.some((c) => c.id === chosen)) options.push(new Option(chosen, chosen));
  select.replaceChildren(...options);
  select.value = chosen;
}

async function removeCamera(camera, opener) {
  const name = camera.name || camera.id;
  if (!confirm(`Remove the offline camera "${name}" from the dashboard? Its alerts are kept; `
    + "it comes back if its node starts sending again.")) {
    if (opener) opener.focus();
    return;
  }
  try {
    await send("DELETE", `/api/cameras/${enc(camera.id)}`);
  } catch (err) {
    notify(err.message);
    return;
  }
  if (view.cameraId === camera.id) $("#camera-view").close();
  state.removed.set(camera.id, Date.now());
  forgetTile(camera.id);
  notify(`Camera "${name}" removed.`, "ok");
}

// -- alerts ------------------------------------------------------------------------------

function reviewOf(alert) { return alert.review || { state: "new" }; }

const rowAlerts = new WeakMap();   // <li> of an alert -> the alert's latest JSON

function alertRows(id) { return $$(`li[data-alert="${id}"]`); }

/** The latest JSON of a shown alert (feed or camera view), or undefined. */
function shownAlert(id) {
  const row = alertRows(id)[0];
  return row && rowAlerts.get(row);
}

function reviewText(review) {
  if (review.state === "new") return "new";
  let text = REVIEW_LABELS[review.state] || review.state;
  if (review.state === "false_positive" && review.label) {
    text += ` (${FALSE_POSITIVE_LABELS[review.label] || review.label})`;
  }
  if (review.by) text += ` by ${review.by}`;
  if (review.at) text += ` · ${clock(review.at)}`;
  return text;
}

/** "no_mask 0.93": the violator's label (the alert's kind) and score. */
function scoreText(alert) { return `${alert.label || alert.kind || "no_mask"} ${alert.score.toFixed(2)}`; }

function violatorsText(alert) { return alert.violators > 1 ? `· ${alert.violators} people` : ""; }

function alertElement(alert, fresh) {
  const el = $("#alert-template").content.firstElementChild.cloneNode(true);
  el.dataset.alert = alert.id;
  el.dataset.seq = alert.seq;
  el.dataset.camera = alert.camera_id;
  const thumb = $(".thumb", el);
  const open = $(".open", el);
  if (alert.thumbnail_url) {
    thumb.src = alert.thumbnail_url;
  } else {
    thumb.classList.add("missing");
  }
  open.setAttribute("aria-label", `Open the snapshot of the alert at ${alert.camera_name}, ${clock(alert.ts)}`);
  open.addEventListener("click", () => showAlert(alert.id, open));
  $(".violators", el).textContent = violatorsText(alert);
  $(".where", el).textContent = alert.place ? `${alert.camera_name} · ${alert.place}` : alert.camera_name;
  const when = $(".when", el);
  when.dateTime = alert.time;
  when.dataset.ts = alert.ts;
  when.textContent = `${clock(alert.ts)} · ${ago(alert.ts)}`;
  $(".score", el).textContent = scoreText(alert);
  for (const button of $$("[data-review]", el)) {
    button.addEventListener("click", () => review(alert.id, button.dataset.review, button));
  }
  renderReview(el, alert);
  if (fresh) el.classList.add("fresh");
  return el;
}

function renderReview(el, alert) {
  rowAlerts.set(el, alert);
  const rv = reviewOf(alert);
  el.dataset.review = rv.state;
  $(".review", el).textContent = reviewText(rv);
  for (const button of $$("[data-review]", el)) {
    const pressed = button.dataset.review === rv.state;
    button.setAttribute("aria-pressed", String(pressed));
    button.title = pressed ? "Undo: mark the alert as new again" : "";
  }
}

/** A newer version of an alert (a review): every row showing it follows. */
function updateAlert(alert) {
  for (const el of alertRows(alert.id)) renderReview(el, alert);
}

/** Insert ``el`` into ``list`` newest first (events may arrive out of order). */
function insertBySeq(list, el, seq, append) {
  if (append) { list.appendChild(el); return; }
  const after = [...list.children].find((child) => Number(child.dataset.seq) < seq);
  list.insertBefore(el, after || null);
}

function addAlert(alert, { fresh = false, append = false } = {}) {
  state.lastSeq = Math.max(state.lastSeq, alert.seq);
  if (state.feed.has(alert.id)) return;
  const el = alertElement(alert, fresh);
  insertBySeq($("#alerts"), el, alert.seq, append);
  state.feed.set(alert.id, el);
  $("#no-alerts").hidden = true;
  if (fresh) {
    const badge = $("#feed-count");
    badge.textContent = String(Number(badge.textContent || 0) + 1);
  }
}

function reviewer() {
  return $("#filters").elements.reviewer.value.trim().slice(0, 64) || "dashboard";
}

/** Ask why an alert is false: "mask" (a masked face), "none" (not a person), "" (cancel). */
function askFalsePositive(opener) {
  const dialog = $("#false-positive");
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    openModal(dialog, opener);
  });
}

/** The review buttons: set the state (again on the pressed button: back to new). */
async function review(alertId, target, button) {
  const alert = shownAlert(alertId);
  const current = alert ? reviewOf(alert).state : "new";
  const body = { state: target === current ? "new" : target, by: reviewer() };
  if (body.state === "false_positive") {
    const label = await askFalsePositive(button);
    if (!label) return;
    body.label = label;
  }
  const rows = alertRows(alertId);
  for (const row of rows) row.setAttribute("aria-busy", "true");
  try {
    updateAlert(await send("POST", `/api/alerts/${alertId}/review`, body));
  } catch (err) {
    notify(err.message);
  } finally {
    for (const row of rows) row.removeAttribute("aria-busy");
  }
}

function showAlert(alertId, opener) {
  const alert = shownAlert(alertId);
  if (!alert) return;
  const dialog = $("#viewer");
  const img = $("#viewer-img");
  img.hidden = !alert.snapshot_url;
  if (alert.snapshot_url) img.src = alert.snapshot_url;
  img.alt = `Snapshot of the alert at ${alert.camera_name}`;
  $("#viewer-title").textContent = `${alert.camera_name} · ${new Date(alert.ts * 1000).toLocaleString()}`;
  const parts = [alert.message, scoreText(alert)];
  if (alert.violators > 1) parts.push(`${alert.violators} people`);
  parts.push(`review: ${reviewText(reviewOf(alert))}`);
  if (!alert.snapshot_url) parts.push("no snapshot kept");
  $("#viewer-text").textContent = parts.join(" · ");
  const frame = $("#viewer-frame");
  frame.hidden = !alert.frame_url;
  if (alert.frame_url) frame.href = alert.frame_url;
  openModal(dialog, opener);
  $("#feed-count").textContent = "";
}

/** The feed's filters as query values (since / until in unix seconds, or null). */
function filters() {
  const form = $("#filters").elements;
  const range = form.range.value;
  const local = (value) => (value ? new Date(value).getTime() / 1000 : null);
  let since = null, until = null;
  if (range === "custom") {
    since = local(form.since.value);
    until = local(form.until.value);
  } else if (range) {
    since = now() - Number(range);
  }
  return { camera: form.camera.value, review: form.state.value, since, until };
}

function matches(alert, f) {
  const rv = reviewOf(alert).state;
  if (f.camera && alert.camera_id !== f.camera) return false;
  if (f.review === "reviewed" ? rv !== "confirmed" && rv !== "false_positive" : f.review && rv !== f.review) return false;
  if (f.since !== null && alert.ts < f.since) return false;
  if (f.until !== null && alert.ts >= f.until) return false;
  return true;
}

function alertQuery(f, extra) {
  const params = new URLSearchParams(extra);
  if (f.camera) params.set("camera_id", f.camera);
  if (f.review) params.set("state", f.review);
  if (f.since !== null) params.set("since", f.since.toFixed(3));
  if (f.until !== null) params.set("until", f.until.toFixed(3));
  return params;
}

async function loadAlerts(cursor) {
  const generation = state.feedGeneration;
  const params = alertQuery(filters(), { limit: "30" });
  if (cursor) params.set("cursor", cursor);
  const response = await api(`/api/alerts?${params}`);
  if (generation !== state.feedGeneration) return;   // the filters changed meanwhile
  if (!response.ok) {
    notify(`Alerts: ${await problemText(response)}`);
    return;
  }
  const body = await response.json();
  if (generation !== state.feedGeneration) return;
  for (const alert of body.alerts) addAlert(alert, { append: Boolean(cursor) });
  state.oldestCursor = body.next_cursor;
  $("#more").hidden = !body.next_cursor;
  $("#no-alerts").hidden = state.feed.size > 0;
}

function reloadAlerts() {
  state.feedGeneration += 1;
  state.feed.clear();
  $("#alerts").replaceChildren();
  $("#more").hidden = true;
  $("#no-alerts").hidden = true;
  const f = filters();
  $("#no-alerts").textContent = f.camera || f.review || f.since !== null || f.until !== null
    ? "No alert matches the filters." : "No alert. Everyone is wearing a mask.";
  loadAlerts(null).catch(() => {});
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
    const tile = state.tiles.get(alert.camera_id);
    if (tile) tile.el.classList.add("alerting");
    if (matches(alert, filters())) addAlert(alert, { fresh: true });
    else state.lastSeq = Math.max(state.lastSeq, alert.seq);
    if (view.cameraId === alert.camera_id) addViewAlert(alert, true);
  });
  source.addEventListener("review", (event) => updateAlert(JSON.parse(event.data)));
}

function tickTimes() {
  for (const when of $$(".alert .when")) {
    when.textContent = `${clock(Number(when.dataset.ts))} · ${ago(Number(when.dataset.ts))}`;
  }
}

// -- the camera view ---------------------------------------------------------------------

const view = {
  dialog: $("#camera-view"),
  cameraId: null,
  pushed: false,      // we added the #camera/<id> history entry (Back closes the view)
  pictures: null,
  frame: null,        // [width, height] of the latest picture
  zones: { ignore: [], include: [], min_overlap: 0, source: "none" },
  saved: "",          // the zones as last loaded or saved (JSON), to tell unsaved changes
  draft: null,        // the polygon being drawn: {kind, points}
  generation: 0,      // bumped per camera shown: late answers for another camera are dropped
};

view.pictures = new PictureLoop($(".cv-picture", view.dialog), {
  interval: (camera) => pictureInterval(camera, 100),
  onPicture: (img) => {
    view.frame = [img.naturalWidth, img.naturalHeight];
    view.dialog.classList.add("has-picture");
    renderViewNote();
    sizeStage();
  },
});

function openCamera(id) {
  view.pushed = true;
  view.dialog.opener = document.activeElement;
  location.hash = `#camera/${enc(id)}`;   // route() opens it; Back closes it
}

function route() {
  const match = location.hash.match(/^#camera\/(.+)$/);
  let id = null;
  try { id = match && decodeURIComponent(match[1]); } catch (err) { /* a mangled link */ }
  if (id) {
    showCameraView(id);
  } else if (view.dialog.open) {
    if (zonesDirty() && !confirm("Discard the unsaved zone changes?")) {
      history.pushState(null, "", `#camera/${enc(view.cameraId)}`);
      view.pushed = true;
      return;
    }
    view.dialog.close();
  }
}

function showCameraView(id) {
  const dialog = view.dialog;
  if (view.cameraId !== id) {
    view.generation += 1;
    view.cameraId = id;
    view.frame = null;
    view.draft = null;
    view.pictures.clear();
    dialog.classList.remove("has-picture");
    setZones({ ignore: [], include: [], min_overlap: 0, source: "none" });
    $(".zone-status", dialog).textContent = "";
    loadZones(id);
    loadViewAlerts(id);
  }
  const opener = dialog.opener || (state.tiles.get(id) && $(".frame", state.tiles.get(id).el));
  openModal(dialog, opener);
  renderViewCamera();
  $(".close", dialog).focus();
}

function renderViewCamera() {
  const dialog = view.dialog;
  const camera = state.cameras.get(view.cameraId);
  const known = camera || { id: view.cameraId, state: "unknown", has_frame: false };
  const { label, tone } = camera ? stateOf(camera) : { label: "unknown camera", tone: "off" };
  const live = known.state === "live";
  dialog.dataset.state = known.state;
  dialog.dataset.tone = tone;
  $(".cv-name", dialog).textContent = (camera && camera.name) || view.cameraId;
  $(".cv-badge", dialog).textContent = label;
  $(".cv-reason", dialog).textContent = !camera ? "This camera is not on the board."
    : live ? "" : [sinceText(camera), camera.state_reason].filter(Boolean).join(": ");
  const picture = $(".cv-picture", dialog);
  picture.alt = `${live ? "Live view" : "Last frame"} of ${(camera && camera.name) || view.cameraId}`;
  renderViewNote();
  $(".cv-remove", dialog).hidden = known.state !== "offline";
  sizeStage();
  if (dialog.open) view.pictures.follow(known);
}

/** The text over the picture: why it is not live, or why there is none. */
function renderViewNote() {
  const camera = state.cameras.get(view.cameraId);
  const note = $(".cv-note", view.dialog);
  if (!camera) {
    note.textContent = "unknown camera";
  } else if (view.dialog.classList.contains("has-picture")) {
    note.textContent = camera.state === "live" ? "" : sinceText(camera);
  } else if (camera.has_frame) {
    note.textContent = "loading the picture…";
  } else {
    note.textContent = camera.state === "live" ? "waiting for the first frame" : sinceText(camera);
  }
}

/** The stage takes the frame's aspect ratio (picture, else the camera's resolution), so
 * the canvas lies exactly over the picture and its 0..1 coordinates are the frame's. */
function sizeStage() {
  let [w, h] = view.frame || [0, 0];
  if (!w || !h) {
    const camera = state.cameras.get(view.cameraId);
    const match = camera && /^(\d+)x(\d+)$/.exec(camera.resolution || "");
    [w, h] = match ? [Number(match[1]), Number(match[2])] : [16, 9];
  }
  const stage = $(".stage", view.dialog);
  stage.style.setProperty("--ar", String(w / h));
  drawZones();
}

view.dialog.addEventListener("cancel", (event) => {
  if (view.draft) {              // Escape first drops the polygon being drawn
    event.preventDefault();
    cancelDraft();
  } else if (zonesDirty() && !confirm("Discard the unsaved zone changes?")) {
    event.preventDefault();
  }
});

$(".close", view.dialog).addEventListener("click", () => {
  if (zonesDirty() && !confirm("Discard the unsaved zone changes?")) return;
  view.dialog.close();
});

view.dialog.addEventListener("close", () => {
  view.pictures.stop();
  if (/^#camera\//.test(location.hash)) {
    if (view.pushed) history.back();
    else history.replaceState(null, "", location.pathname + location.search);
  }
  view.pushed = false;
  view.cameraId = null;
  view.draft = null;
  view.generation += 1;
});

async function loadViewAlerts(id) {
  const generation = view.generation;
  const list = $(".cv-alert-list", view.dialog);
  list.replaceChildren();
  $(".cv-no-alerts", view.dialog).hidden = true;
  try {
    const response = await api(`/api/alerts?${new URLSearchParams({ camera_id: id, limit: "10" })}`);
    if (!response.ok || generation !== view.generation) return;
    const body = await response.json();
    if (generation !== view.generation) return;
    for (const alert of body.alerts) addViewAlert(alert, false);
  } catch (err) {
    // the list fills from the live feed
  } finally {
    if (generation === view.generation) $(".cv-no-alerts", view.dialog).hidden = list.children.length > 0;
  }
}

function addViewAlert(alert, fresh) {
  const list = $(".cv-alert-list", view.dialog);
  if ($(`li[data-alert="${alert.id}"]`, list)) return;
  insertBySeq(list, alertElement(alert, fresh), alert.seq, false);
  while (list.children.length > 20) list.lastElementChild.remove();
  $(".cv-no-alerts", view.dialog).hidden = true;
}

// -- zones -------------------------------------------------------------------------------

function zonesBody() {
  const copy = (list) => list.map((z) => ({ name: z.name, points: z.points.map((p) => [p[0], p[1]]) }));
  const overlap = Number($(".zones input[name=min_overlap]", view.dialog).value) || 0;
  return { ignore: copy(view.zones.ignore), include: copy(view.zones.include), min_overlap: overlap };
}

function zonesDirty() {
  return Boolean(view.cameraId) && (Boolean(view.draft) || JSON.stringify(zonesBody()) !== view.saved);
}

function setZones(body) {
  const copy = (list) => (list || []).map((z) => ({ name: z.name, points: z.points.map((p) => [p[0], p[1]]) }));
  view.zones = { ignore: copy(body.ignore), include: copy(body.include), source: body.source || "none" };
  $(".zones input[name=min_overlap]", view.dialog).value = String(body.min_overlap || 0);
  view.saved = JSON.stringify(zonesBody());
  renderZones();
}

async function loadZones(id) {
  const generation = view.generation;
  const status = $(".zone-status", view.dialog);
  status.textContent = "loading the zones…";
  try {
    const response = await api(`/api/cameras/${enc(id)}/zones`);
    if (generation !== view.generation) return;
    if (!response.ok) {
      status.textContent = `Zones: ${await problemText(response)}`;
      return;
    }
    const body = await response.json();
    if (generation !== view.generation) return;
    setZones(body);
    status.textContent = "";
  } catch (err) {
    if (generation === view.generation) status.textContent = "The zones could not be loaded.";
  }
}

async function saveZones() {
  const id = view.cameraId;
  const generation = view.generation;
  const status = $(".zone-status", view.dialog);
  const button = $(".zone-save", view.dialog);
  button.disabled = true;
  status.textContent = "saving…";
  try {
    const saved = await send("PUT", `/api/cameras/${enc(id)}/zones`, zonesBody());
    if (generation !== view.generation) return;
    setZones(saved);
    status.textContent = `Saved at ${clock(Date.now() / 1000)}.`;
  } catch (err) {
    if (generation !== view.generation) return;
    status.textContent = err.message;
    notify(err.message);
    renderZones();
  }
}

function nextName(kind) {
  const { prefix } = ZONE_KINDS[kind];
  const used = new Set(view.zones[kind].map((z) => z.name));
  let n = 1;
  while (used.has(`${prefix}-${n}`)) n += 1;
  return `${prefix}-${n}`;
}

function startDraft(kind) {
  if (view.zones[kind].length >= MAX_POLYGONS) return;   // its button is disabled
  view.draft = { kind, points: [] };
  renderZones();
  $(".zone-cancel", view.dialog).focus();
}

function cancelDraft() {
  view.draft = null;
  renderZones();
  $(`[data-draw="ignore"]`, view.dialog).focus();
}

function finishDraft() {
  const draft = view.draft;
  if (!draft || draft.points.length < 3) return;
  view.zones[draft.kind].push({ name: nextName(draft.kind), points: draft.points });
  view.draft = null;
  renderZones();
  $(".zone-save", view.dialog).focus();
}

/** A pointer position as frame-relative [x, y] (0..1, 4 decimals) of the canvas. */
function framePoint(event, canvas) {
  const rect = canvas.getBoundingClientRect();
  const clamp = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
  return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
}

function onCanvasClick(event) {
  const draft = view.draft;
  if (!draft) return;
  const canvas = event.currentTarget;
  const point = framePoint(event, canvas);
  if (draft.points.length >= 3) {
    const rect = canvas.getBoundingClientRect();
    const [x0, y0] = draft.points[0];
    const dx = (point[0] - x0) * rect.width, dy = (point[1] - y0) * rect.height;
    if (Math.hypot(dx, dy) <= CLOSE_RADIUS_PX) { finishDraft(); return; }
  }
  if (draft.points.length >= MAX_POINTS) {
    $(".zone-status", view.dialog).textContent = `At most ${MAX_POINTS} points: close the polygon.`;
    return;
  }
  draft.points.push(point);
  renderZones();
}

function renderZones() {
  const dialog = view.dialog;
  const drawing = Boolean(view.draft);
  dialog.classList.toggle("drawing", drawing);
  for (const button of $$("[data-draw]", dialog)) {
    button.hidden = drawing;
    button.disabled = view.zones[button.dataset.draw].length >= MAX_POLYGONS;
    button.title = button.disabled ? `At most ${MAX_POLYGONS} of them per camera` : "";
  }
  $(".zone-finish", dialog).hidden = !drawing;
  $(".zone-finish", dialog).disabled = !drawing || view.draft.points.length < 3;
  $(".zone-undo", dialog).hidden = !drawing;
  $(".zone-undo", dialog).disabled = !drawing || view.draft.points.length === 0;
  $(".zone-cancel", dialog).hidden = !drawing;
  $(".zone-hint", dialog).textContent = drawing
    ? `${ZONE_KINDS[view.draft.kind].label}: click on the picture to add corners (${view.draft.points.length} so far); `
      + "click the first corner or “Close polygon” to finish."
    : "Ignore masks drop the faces inside them (a poster, a screen); with include zones only "
      + "faces inside one count. Choose one, then click on the picture to add its corners.";
  const source = { config: "(from the configuration)", api: "(set here)", none: "" }[view.zones.source] || "";
  $(".zone-source", dialog).textContent = source;
  const list = $(".zone-list", dialog);
  list.replaceChildren();
  for (const kind of ["ignore", "include"]) {
    view.zones[kind].forEach((zone, index) => list.appendChild(zoneItem(kind, zone, index)));
  }
  const dirty = zonesDirty();
  $(".zone-save", dialog).disabled = drawing || !dirty;
  $(".zone-revert", dialog).disabled = drawing || !dirty;
  drawZones();
}

function zoneItem(kind, zone, index) {
  const li = document.createElement("li");
  li.className = "zone";
  li.dataset.kind = kind;
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  const what = document.createElement("span");
  what.className = "kind";
  what.textContent = ZONE_KINDS[kind].label;
  const name = document.createElement("input");
  name.value = zone.name;
  name.maxLength = 64;
  name.setAttribute("aria-label", `Name of ${ZONE_KINDS[kind].label.toLowerCase()} ${index + 1}`);
  name.addEventListener("input", () => {
    zone.name = name.value;
    const dirty = zonesDirty();
    $(".zone-save", view.dialog).disabled = Boolean(view.draft) || !dirty;
    $(".zone-revert", view.dialog).disabled = Boolean(view.draft) || !dirty;
    drawZones();
  });
  const points = document.createElement("span");
  points.className = "points";
  points.textContent = `${zone.points.length} points`;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "quiet small";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${ZONE_KINDS[kind].label.toLowerCase()} ${zone.name}`);
  remove.addEventListener("click", () => {
    view.zones[kind].splice(view.zones[kind].indexOf(zone), 1);
    renderZones();
    $(`[data-draw="${kind}"]`, view.dialog).focus();
  });
  li.append(swatch, what, name, points, remove);
  return li;
}

function drawZones() {
  const canvas = $(".cv-canvas", view.dialog);
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio), height = Math.round(canvas.clientHeight * ratio);
  if (!width || !height) return;
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const path = (points) => {
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x * width, y * height) : ctx.moveTo(x * width, y * height)));
  };
  ctx.lineWidth = 2 * ratio;
  ctx.font = `${12 * ratio}px system-ui, sans-serif`;
  for (const kind of ["include", "ignore"]) {
    const style = ZONE_KINDS[kind];
    for (const zone of view.zones[kind]) {
      path(zone.points);
      ctx.closePath();
      ctx.fillStyle = style.fill;
      ctx.fill();
      ctx.strokeStyle = style.line;
      ctx.setLineDash([]);
      ctx.stroke();
      const [x, y] = zone.points[0];
      ctx.fillStyle = style.line;
      ctx.fillText(zone.name, x * width + 4 * ratio, y * height - 4 * ratio);
    }
  }
  const draft = view.draft;
  if (draft && draft.points.length) {
    const style = ZONE_KINDS[draft.kind];
    path(draft.points);
    ctx.strokeStyle = "#38bdf8";
    ctx.setLineDash([6 * ratio, 4 * ratio]);
    ctx.stroke();
    ctx.setLineDash([]);
    draft.points.forEach(([x, y], i) => {
      ctx.beginPath();
      ctx.arc(x * width, y * height, (i === 0 && draft.points.length >= 3 ? 7 : 4) * ratio, 0, 2 * Math.PI);
      ctx.fillStyle = i === 0 ? style.line : "#38bdf8";
      ctx.fill();
    });
  }
}

function wireZoneEditor() {
  const dialog = view.dialog;
  const canvas = $(".cv-canvas", dialog);
  canvas.addEventListener("click", onCanvasClick);
  for (const button of $$("[data-draw]", dialog)) {
    button.addEventListener("click", () => startDraft(button.dataset.draw));
  }
  $(".zone-finish", dialog).addEventListener("click", finishDraft);
  $(".zone-undo", dialog).addEventListener("click", () => {
    if (view.draft) view.draft.points.pop();
    renderZones();
  });
  $(".zone-cancel", dialog).addEventListener("click", cancelDraft);
  $(".zone-save", dialog).addEventListener("click", saveZones);
  $(".zone-revert", dialog).addEventListener("click", () => {
    setZones({ ...JSON.parse(view.saved), source: view.zones.source });
    $(".zone-status", dialog).textContent = "";
  });
  $(".zones input[name=min_overlap]", dialog).addEventListener("input", () => renderZones());
  $(".remove-camera", dialog).addEventListener("click", (event) => {
    const camera = state.cameras.get(view.cameraId);
    if (camera) removeCamera(camera, event.currentTarget);
  });
  new ResizeObserver(drawZones).observe($(".stage", dialog));
}

// -- start -------------------------------------------------------------------------------

function wireFeed() {
  const form = $("#filters");
  const reviewerInput = form.elements.reviewer;
  try { reviewerInput.value = localStorage.getItem("facemask.reviewer") || ""; } catch (err) { /* private mode */ }
  reviewerInput.addEventListener("change", () => {
    try { localStorage.setItem("facemask.reviewer", reviewerInput.value.trim()); } catch (err) { /* private mode */ }
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", (event) => {
    if (event.target === reviewerInput) return;
    $(".custom-range", form).hidden = form.elements.range.value !== "custom";
    reloadAlerts();
  });
  $("#more").addEventListener("click", () => loadAlerts(state.oldestCursor).catch(() => {}));
  $("#notice .dismiss").addEventListener("click", () => { $("#notice").hidden = true; });
}

async function main() {
  wireFeed();
  wireZoneEditor();
  try {
    const response = await api("/api/config");
    if (response.ok) state.config = await response.json();
  } catch (err) { /* defaults */ }
  await loadCameras();
  route();                          // a #camera/<id> link opens that camera's view
  window.addEventListener("hashchange", route);
  try { await loadAlerts(null); } catch (err) { /* the feed fills from events */ }
  connectEvents();
  // An EventSource closed for good (e.g. an HTTP error while the service restarted) is reopened.
  setInterval(() => {
    if (state.events && state.events.readyState === EventSource.CLOSED) connectEvents();
  }, 5000);
  setInterval(loadCameras, 2000);
  setInterval(tickTimes, 5000);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    for (const tile of state.tiles.values()) tile.pictures.poke();
    view.pictures.poke();
  });
}

main();
