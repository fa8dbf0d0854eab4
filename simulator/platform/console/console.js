// SOS Bridge operator console: plain JavaScript, no framework, no CDN (docs/operations/console.md). It
// long-polls the receiver's /console/api/changes, asks the bridge for its own record of each alert (real
// state, whole conversation, whoever acted) and builds every element with textContent: contact fields are
// never parsed as HTML.
"use strict";

const TOKEN_KEY = "sosbridge-console-token";
const WAIT_S = 20;
// Between two assertive announcements, so a screen reader says each one (a page may set a shorter
// window.SOSBRIDGE_ANNOUNCE_GAP_MS before this script runs: the tests do).
const ANNOUNCE_GAP_MS = Number(window.SOSBRIDGE_ANNOUNCE_GAP_MS) || 1500;
const SELECTED_REFRESH_MS = 3000;
const SWEEP_MS = 10000;
const SWEEP_BATCH = 20;
const LIFE_SAFETY = new Set(["sos", "panic", "duress", "fall", "no_movement", "medical", "fire", "check_in_missed"]);
const CRITICAL = new Set(["sos", "panic", "duress"]);
const CLOSED = new Set(["resolved", "cancelled"]);
const TOLD = {
  received: "Alert received. Sending it to the police.",
  forwarded: "Your alert has been sent to the police.",
  acknowledged: "Help is on the way.",
  resolved: "The police have closed this alert.",
  cancelled: "Alert cancelled.",
};

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  since: 0,
  activitySince: 0,
  alerts: new Map(), // key -> {key, alertId, records, activity, bridge, lastIndex, fresh}
  selected: null,
  generation: 0, // bumps on sign-in/out so an old poll loop stops
  announcements: [],
  announcing: false,
  filters: { state: "all", kind: "", silent: false },
};

class AuthError extends Error {}

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  opts.headers = headers;
  const response = await fetch(path, opts);
  if (response.status === 401) throw new AuthError("the control token was refused");
  return response;
}

// -- sign in --------------------------------------------------------------------------------------------
function showLogin(message) {
  state.generation += 1;
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setConnection("Signed out", "down");
  $("token").focus();
}

function showConsole() {
  $("login").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = !state.token;
}

async function signIn(event) {
  event.preventDefault();
  state.token = $("token").value.trim();
  try {
    const r = await api("/console/api/changes?wait=0&since=0&activity_since=0");
    if (!r.ok) throw new Error("the receiver answered " + r.status);
  } catch (err) {
    state.token = "";
    $("login-error").textContent = err instanceof AuthError ? "That control token was refused." : String(err);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  clearAlerts();
  showLogin("");
}

// -- polling --------------------------------------------------------------------------------------------
function setConnection(text, cls) {
  const c = $("connection");
  c.textContent = text;
  c.className = "connection " + (cls || "");
}

function clearAlerts() {
  state.alerts.clear();
  state.since = 0;
  state.activitySince = 0;
  state.selected = null;
  renderList();
  renderDetail();
}

function start() {
  const generation = ++state.generation;
  clearAlerts();
  showConsole();
  poll(generation);
  refreshLoop(generation);
}

async function poll(generation) {
  let wait = 0;
  while (generation === state.generation) {
    try {
      const r = await api(
        `/console/api/changes?since=${state.since}&activity_since=${state.activitySince}&wait=${wait}`
      );
      if (generation !== state.generation) return;
      if (!r.ok) throw new Error("the receiver answered " + r.status);
      apply(await r.json(), wait > 0);
      setConnection("Live", "live");
      wait = WAIT_S;
    } catch (err) {
      if (generation !== state.generation) return;
      if (err instanceof AuthError) {
        showLogin(state.token ? "The control token was refused." : "");
        return;
      }
      setConnection("Connection lost, retrying…", "down");
      await new Promise((resolve) => setTimeout(resolve, 2000));
      wait = 0;
    }
  }
}

// The bridge's own record: the selected alert often, every open one now and then (acted on elsewhere).
async function refreshLoop(generation) {
  let lastSweep = 0;
  let cursor = 0;
  while (generation === state.generation) {
    await new Promise((resolve) => setTimeout(resolve, SELECTED_REFRESH_MS));
    if (generation !== state.generation) return;
    const selected = state.selected ? state.alerts.get(state.selected) : null;
    if (selected) await refreshBridge(selected);
    if (Date.now() - lastSweep >= SWEEP_MS) {
      lastSweep = Date.now();
      const open = [...state.alerts.values()].filter((e) => e.alertId && !CLOSED.has(currentState(e)));
      for (let i = 0; i < Math.min(SWEEP_BATCH, open.length); i++) {
        await refreshBridge(open[(cursor + i) % open.length], true);
      }
      cursor += SWEEP_BATCH;
    }
    renderList();
  }
}

async function refreshBridge(entry, quiet) {
  if (!entry || !entry.alertId) return;
  try {
    const r = await api(`/console/api/alerts/${encodeURIComponent(entry.alertId)}/bridge`);
    if (!r.ok) return;
    entry.bridge = await r.json();
  } catch (err) {
    if (err instanceof AuthError) showLogin("The control token was refused.");
    return;
  }
  if (!quiet && entry.key === state.selected) renderDetail();
}

function alertKey(record) {
  const c = record.contact || {};
  return c.alert_id || c.identifier || "record-" + record.index;
}

function entryFor(key, alertId) {
  let entry = state.alerts.get(key);
  if (!entry) {
    entry = { key, alertId: alertId || null, records: [], activity: [], bridge: null, lastIndex: -1, fresh: true };
    state.alerts.set(key, entry);
  }
  return entry;
}

function apply(data, live) {
  if (data.reset) {
    state.alerts.clear();
    state.selected = null;
  }
  const touched = new Set();
  for (const record of data.records) {
    const c = record.contact || {};
    const key = alertKey(record);
    const isNew = !state.alerts.has(key);
    const entry = entryFor(key, c.alert_id);
    entry.records.push(record);
    entry.lastIndex = record.index;
    touched.add(entry);
    if (live && !record.duplicate) {
      if (isNew && (LIFE_SAFETY.has(c.kind) || c.silent)) announce(alertAnnouncement(c));
      if (c.msg_type === "message" && c.message) announce(`Message from ${who(c)}: ${c.message.text}`);
    }
    if (!isNew && live) entry.fresh = true;
  }
  for (const act of data.activity) {
    const entry = state.alerts.get(act.alert_id);
    if (entry) {
      entry.activity.push(act);
      touched.add(entry);
    }
  }
  state.since = data.next;
  state.activitySince = data.activity_next;
  if (!live) for (const e of state.alerts.values()) e.fresh = false;
  updateKindFilter();
  if (state.selected === null && state.alerts.size) {
    const first = visible()[0];
    if (first) state.selected = first.key;
  }
  renderList();
  renderDetail();
  const selected = state.selected ? state.alerts.get(state.selected) : null;
  if (selected && touched.has(selected)) refreshBridge(selected);
}

// -- announcements: every one is said, in order, none lost when many arrive together ---------------------
function alertAnnouncement(c) {
  const duress = isDuress(c);
  const what = duress ? "DURESS alert" : `${c.silent ? "silent " : ""}${kindName(c.kind)} alert`;
  return `New ${what} from ${who(c)}`;
}

function announce(text) {
  state.announcements.push(text);
  if (!state.announcing) drainAnnouncements();
}

function drainAnnouncements() {
  const next = state.announcements.shift();
  if (next === undefined) {
    state.announcing = false;
    return;
  }
  state.announcing = true;
  const region = $("announce");
  region.textContent = "";
  // A fresh text node in an emptied region: read even when it repeats the previous words.
  setTimeout(() => {
    region.textContent = next;
    setTimeout(drainAnnouncements, ANNOUNCE_GAP_MS);
  }, 50);
}

// -- the model ------------------------------------------------------------------------------------------
function latestContact(entry) {
  for (let i = entry.records.length - 1; i >= 0; i--) {
    if (entry.records[i].contact) return entry.records[i].contact;
  }
  return {};
}

function firstContact(entry) {
  const r = entry.records.find((x) => x.contact);
  return r ? r.contact : {};
}

function who(c) {
  return (c.person && c.person.name) || (c.device && c.device.id) || c.sender || "unknown";
}

function kindName(kind) {
  return String(kind || "contact").replace(/_/g, " ");
}

function folded(c) {
  return (c.attributes && c.attributes.escalation_kinds) || {};
}

function isDuress(c) {
  return c.kind === "duress" || Boolean(folded(c).duress);
}

function heldCancels(entry) {
  const c = latestContact(entry);
  const fromContact = Number((c.attributes || {}).cancel_requests_under_duress || 0);
  const fromBridge = entry.bridge ? entry.bridge.history.filter((h) => h.event === "cancel_held").length : 0;
  return Math.max(fromContact, fromBridge);
}

function currentState(entry) {
  if (entry.bridge && entry.bridge.alert && entry.bridge.alert.state) return entry.bridge.alert.state;
  let s = latestContact(entry).state || null;
  for (const act of entry.activity) {
    if (act.bridge_status >= 200 && act.bridge_status < 300) {
      if (act.type === "ack" && !CLOSED.has(s)) s = "acknowledged";
      if (act.type === "resolve") s = "resolved";
    }
  }
  return s;
}

function severity(c) {
  if (c.silent || isDuress(c) || CRITICAL.has(c.kind) || Object.keys(folded(c)).some((k) => CRITICAL.has(k))) {
    return "critical";
  }
  if (LIFE_SAFETY.has(c.kind)) return "high";
  return "routine";
}

function rank(entry) {
  const c = latestContact(entry);
  if (CLOSED.has(currentState(entry))) return 2;
  return severity(c) === "routine" && !LIFE_SAFETY.has(c.kind) ? 1 : 0;
}

function raisedAt(entry) {
  const c = firstContact(entry);
  const t = Date.parse(c.occurred_at || c.received_at || "");
  return Number.isNaN(t) ? (entry.records[0] ? entry.records[0].received_at * 1000 : 0) : t;
}

// Triage order: open life-safety, silent and duress alerts first (the longest waiting first), then the
// other open ones (likewise), then the closed ones, newest first.
function sorted() {
  return [...state.alerts.values()].sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    if (ra !== rb) return ra - rb;
    return ra === 2 ? raisedAt(b) - raisedAt(a) : raisedAt(a) - raisedAt(b);
  });
}

function visible() {
  const f = state.filters;
  return sorted().filter((e) => {
    const c = latestContact(e);
    const closed = CLOSED.has(currentState(e));
    if (f.state === "open" && closed) return false;
    if (f.state === "closed" && !closed) return false;
    if (f.kind && c.kind !== f.kind) return false;
    if (f.silent && !(c.silent || isDuress(c))) return false;
    return true;
  });
}

function statusLabel(status) {
  if (status === "exercise") return "EXERCISE";
  if (status === "test") return "TEST";
  return null;
}

const SEVERITY_TEXT = { critical: "CRITICAL", high: "HIGH", routine: "ROUTINE" };

function badges(contact, entry) {
  const out = [];
  const ex = statusLabel(contact.status);
  if (ex) out.push(el("span", { class: "badge " + contact.status }, ex));
  if (isDuress(contact)) out.push(el("span", { class: "badge duress" }, "DURESS"));
  if (contact.silent) out.push(el("span", { class: "badge silent" }, "SILENT"));
  const sev = severity(contact);
  out.push(el("span", { class: "badge sev-" + sev }, SEVERITY_TEXT[sev]));
  const s = currentState(entry);
  if (s) out.push(el("span", { class: "badge state state-" + s }, s));
  if (entry.records.some((r) => r.contact && r.contact.msg_type === "message")) {
    out.push(el("span", { class: "badge message" }, "message"));
  }
  return out;
}

function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString();
}

const LANGUAGE_NAMES = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], { type: "language" }) : null;

function languageName(tag) {
  if (!tag) return null;
  try {
    const name = LANGUAGE_NAMES ? LANGUAGE_NAMES.of(tag) : null;
    return name && name !== tag ? `${name} (${tag})` : tag;
  } catch (err) {
    return tag;
  }
}

// -- filters --------------------------------------------------------------------------------------------
function updateKindFilter() {
  const select = $("filter-kind");
  const kinds = [...new Set([...state.alerts.values()].map((e) => latestContact(e).kind).filter(Boolean))].sort();
  const have = [...select.options].map((o) => o.value).filter(Boolean);
  if (kinds.join() === have.join()) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "All kinds"), ...kinds.map((k) => el("option", { value: k }, kindName(k))));
  select.value = kinds.includes(chosen) ? chosen : "";
}

function onFilter() {
  state.filters = { state: $("filter-state").value, kind: $("filter-kind").value, silent: $("filter-silent").checked };
  renderList();
}

// -- the list: one Tab stop, the arrow keys move the selection -------------------------------------------
function renderList() {
  const list = $("alert-list");
  const hadFocus = list.contains(document.activeElement);
  list.replaceChildren();
  const entries = visible();
  $("empty").hidden = entries.length > 0;
  $("empty").textContent = state.alerts.size ? "No alert matches these filters." : "No contacts received yet.";
  $("alert-count").textContent = state.alerts.size ? `(${entries.length} of ${state.alerts.size})` : "";
  const current = entries.some((e) => e.key === state.selected) ? state.selected : entries.length ? entries[0].key : null;
  for (const entry of entries) {
    const c = latestContact(entry);
    const button = el(
      "button",
      {
        type: "button",
        role: "option",
        id: "opt-" + entry.key.replace(/[^A-Za-z0-9_-]/g, "_"),
        class: "alert-item" + (entry.fresh ? " fresh" : ""),
        "data-key": entry.key,
        "data-alert-id": entry.alertId,
        "aria-selected": entry.key === state.selected ? "true" : "false",
        tabindex: entry.key === current ? "0" : "-1",
      },
      el("span", { class: "line1" }, ...badges(c, entry), `${kindName(c.kind || c.format)} · ${who(c)}`),
      el("br"),
      el("span", { class: "line2" }, `raised ${fmtTime(raisedAt(entry) / 1000)} · ` +
        `${entry.records.length} contact${entry.records.length === 1 ? "" : "s"}`)
    );
    button.addEventListener("click", () => select(entry.key, false));
    button.addEventListener("keydown", onListKey);
    list.append(el("li", { role: "presentation" }, button));
  }
  if (hadFocus) focusItem(current);
}

function focusItem(key) {
  if (!key) return;
  const item = $("alert-list").querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (item) {
    item.focus();
    item.scrollIntoView({ block: "nearest" });
  }
}

function onListKey(event) {
  const buttons = [...$("alert-list").querySelectorAll("button")];
  const i = buttons.indexOf(event.currentTarget);
  let next = null;
  if (event.key === "ArrowDown") next = buttons[i + 1];
  else if (event.key === "ArrowUp") next = buttons[i - 1];
  else if (event.key === "Home") next = buttons[0];
  else if (event.key === "End") next = buttons[buttons.length - 1];
  if (next) {
    event.preventDefault();
    select(next.dataset.key, true);
  }
}

function select(key, keepFocusInList) {
  state.selected = key;
  const entry = state.alerts.get(key);
  if (entry) entry.fresh = false;
  renderList();
  renderDetail();
  focusItem(key);
  if (!keepFocusInList) $("detail").scrollTop = 0;
  if (entry) refreshBridge(entry);
}

// -- the detail view ------------------------------------------------------------------------------------
function field(dl, label, value, id) {
  if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return;
  const dd = el("dd", id ? { id } : {});
  if (value instanceof Node) dd.append(value);
  else dd.textContent = Array.isArray(value) ? value.join("; ") : String(value);
  dl.append(el("dt", {}, label), dd);
}

function fixAge(loc, contact) {
  if (typeof loc.age_s === "number") return `${Math.round(loc.age_s)} s when received`;
  if (loc.fix_time && contact.received_at) {
    const s = (new Date(contact.received_at) - new Date(loc.fix_time)) / 1000;
    if (!Number.isNaN(s)) return `${Math.round(s)} s when received`;
  }
  return null;
}

function mapLink(loc, id, text) {
  const lat = Number(loc.lat).toFixed(6);
  const lon = Number(loc.lon).toFixed(6);
  const href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=17/${lat}/${lon}`;
  return el("a", { href, target: "_blank", rel: "noopener noreferrer", id }, text);
}

function hasCoordinates(loc) {
  return loc && loc.lat !== null && loc.lat !== undefined && loc.lon !== null && loc.lon !== undefined;
}

function place(loc) {
  const acc = typeof loc.accuracy_m === "number" ? ` ± ${Math.round(loc.accuracy_m)} m` : " (accuracy unknown)";
  return `${Number(loc.lat).toFixed(5)}, ${Number(loc.lon).toFixed(5)}${acc}`;
}

function civicLine(loc) {
  const civic = (loc && loc.civic) || {};
  return Object.values(civic).filter((v) => typeof v === "string").join(", ");
}

function renderDetail() {
  const entry = state.selected ? state.alerts.get(state.selected) : null;
  $("detail-body").hidden = !entry;
  if (!entry) {
    $("detail-h").textContent = "No alert selected";
    return;
  }
  const c = latestContact(entry);
  const duress = isDuress(c);
  const name = who(c);
  $("detail-h").textContent = `${duress ? "DURESS " : c.silent ? "Silent " : ""}${kindName(c.kind || c.format)} · ${name}`;
  const s = currentState(entry);
  const closed = CLOSED.has(s);
  const discreet = Boolean(c.silent || duress);
  const held = heldCancels(entry);

  const kinds = folded(c);
  $("duress-banner").hidden = !duress;
  $("duress-banner").textContent = duress
    ? (c.kind === "duress"
      ? "DURESS: the person raised this under duress (a duress phrase or code). Someone may be with them and listening."
      : `DURESS folded in: this ${kindName(c.kind)} alert was joined by a duress signal (${kinds.duress}×). ` +
        "Someone may be with the person and listening.")
    : "";
  $("held-banner").hidden = !(held && !closed);
  $("held-banner").textContent = held && !closed
    ? `A cancel was asked for at the device under duress (${held}×) and held: this alert is ONGOING. ` +
      "The person may have been made to cancel. Do not stand down until someone has spoken to them safely."
    : "";
  $("silent-banner").hidden = !c.silent;
  const ex = statusLabel(c.status);
  $("exercise-banner").hidden = !ex;
  $("exercise-banner").textContent = ex ? `${ex}: not a real emergency. Do not dispatch.` : "";
  $("told").textContent = discreet
    ? held
      ? "What the person was told: their device showed \"cancelled\" after the cancel; nothing else (silent)."
      : "What the person was told: nothing. Their device shows no sign of this alert (silent)."
    : `What the person is told: "${TOLD[s] || "Alert received."}"`;

  $("ack").disabled = !entry.alertId || closed || s === "acknowledged";
  $("resolve").disabled = !entry.alertId || closed;
  if (closed) $("resolve-form").hidden = true;
  $("send").disabled = !entry.alertId || closed;
  $("message-text").disabled = !entry.alertId || closed;
  $("message-note").textContent = closed
    ? "This alert is closed: no more messages can be sent."
    : discreet
      ? "Delivered discreetly: shown without sound, never spoken or sent by SMS."
      : "Delivered on the person's own channels (app, watch, speaker, SMS where allowed).";

  const dl = el("dl", { id: "fields", class: "fields" });
  field(dl, "Kind", c.kind, "f-kind");
  field(dl, "Severity", `${SEVERITY_TEXT[severity(c)]} (contact: ${c.severity || "unknown"})`, "f-severity");
  field(dl, "Silent", c.silent === undefined ? null : c.silent ? "Yes: do not call or sound anything" : "No", "f-silent");
  if (Object.keys(kinds).length) {
    field(dl, "Folded in", Object.entries(kinds).map(([k, n]) => `${kindName(k)} ×${n}`).join(", "), "f-folded");
  }
  field(dl, "State", s, "f-state");
  field(dl, "Status", c.status === "actual" ? "actual (real)" : c.status, "f-status");
  // A message contact's reason is always "message from the person": the reason of the last other contact.
  const other = [...entry.records].reverse().find((r) => r.contact && r.contact.msg_type !== "message");
  field(dl, "Reason", other ? other.contact.reason : c.reason);
  const attrs = c.attributes || {};
  if (attrs.checkin_note !== undefined) {
    field(dl, "Check-in note", attrs.checkin_note || "(none)", "f-checkin-note");
    field(dl, "Check-in timer", `started ${fmtTime(attrs.checkin_started_at)}, due ${fmtTime(attrs.checkin_due_at)}`,
      "f-checkin");
  }
  const p = c.person || {};
  field(dl, "Person", p.name, "f-person");
  field(dl, "Phone", p.phone);
  field(dl, "Language", languageName(c.language || p.language), "f-language");
  field(dl, "Needs", c.communication_needs && c.communication_needs.length ? c.communication_needs : p.communication_needs, "f-needs");
  field(dl, "Vulnerability notes", p.vulnerability_notes, "f-notes");
  const loc = c.location || null;
  if (loc) {
    if (hasCoordinates(loc)) {
      field(dl, "Location", place(loc), "f-location");
      field(dl, "Map", mapLink(loc, "map-link", "Open in OpenStreetMap (new tab)"));
    }
    field(dl, "Location source", (loc.source || "") + (loc.last_known ? " (last known)" : ""), "f-source");
    field(dl, "Fix age", fixAge(loc, c), "f-fix-age");
    field(dl, "Grid reference", loc.grid_ref, "f-grid");
    field(dl, "Address", civicLine(loc));
  }
  const home = entry.bridge ? entry.bridge.registered_address : null;
  if (home && !(loc && loc.source === "registered_address")) {
    const text = [civicLine(home), hasCoordinates(home) ? place(home) : "", home.grid_ref || ""].filter(Boolean).join(" · ");
    field(dl, "Home address (registered)", text, "f-home");
    if (hasCoordinates(home)) field(dl, "Home on the map", mapLink(home, "home-map-link", "Open home in OpenStreetMap (new tab)"));
  }
  const d = c.device || {};
  field(dl, "Device", [d.id, d.label, d.profile].filter(Boolean).join(" · "));
  field(dl, "Transport", d.transport);
  field(dl, "Raised", fmtTime(firstContact(entry).occurred_at), "f-raised");
  field(dl, "Alert id", entry.alertId, "f-alert-id");
  $("fields").replaceWith(dl);

  renderThread(entry);
  const contacts = el("ol", { id: "contacts", class: "contacts" });
  for (const r of entry.records) {
    const rc = r.contact || {};
    const flags = [r.valid ? "valid" : "INVALID", r.duplicate ? "duplicate" : null].filter(Boolean).join(", ");
    contacts.append(el("li", {}, `${fmtTime(r.received_at)}: ${rc.msg_type || r.content_type} ` +
      `${rc.seq ? "#" + rc.seq : ""} (${flags})`));
  }
  $("contacts").replaceWith(contacts);
}

// The conversation from the bridge's history (every message both ways, whoever sent it, and who
// acknowledged or resolved); from this console's own records until the bridge has answered.
function threadItems(entry) {
  const items = [];
  if (entry.bridge && Array.isArray(entry.bridge.history)) {
    for (const h of entry.bridge.history) {
      const d = h.detail || {};
      const at = Date.parse(h.at);
      if (h.event === "message_in") {
        items.push({ at, from: "person", text: d.text, meta: `Person · ${fmtTime(h.at)} · via ${d.transport}` });
      } else if (h.event === "message_out") {
        items.push({ at, from: "operator", text: d.text,
          meta: `${d.by || "platform"} · ${fmtTime(h.at)}${d.discreet ? " · discreet (no sound)" : ""}${d.audible ? " · audible" : ""}` });
      } else if (h.event === "ack" || h.event === "resolve") {
        const what = h.event === "ack" ? "Acknowledged" : "Resolved";
        items.push({ at, from: "event", text: `${what} by ${d.by || "platform"}${d.note ? ": " + d.note : ""}`, meta: fmtTime(h.at) });
      } else if (h.event === "cancel_held") {
        items.push({ at, from: "event", text: "Cancel asked for at the device under duress: held, the alert stays open", meta: fmtTime(h.at) });
      }
    }
    return items;
  }
  for (const r of entry.records) {
    const c = r.contact || {};
    if (c.msg_type === "message" && c.message) {
      items.push({ at: Date.parse(c.message.sent_at) || r.received_at * 1000, from: "person", text: c.message.text,
        meta: `Person · ${fmtTime(c.message.sent_at)} · via ${c.message.transport}` });
    }
  }
  for (const a of entry.activity) {
    if (a.type === "message") {
      items.push({ at: a.at * 1000, from: "operator", text: a.text,
        meta: `Operator · ${fmtTime(a.at)}${a.discreet ? " · discreet (no sound)" : ""}${a.audible ? " · audible" : ""}` });
    }
  }
  return items;
}

function renderThread(entry) {
  const items = threadItems(entry);
  items.sort((x, y) => x.at - y.at);
  const thread = $("thread");
  thread.replaceChildren();
  if (!items.length) {
    thread.append(el("li", { class: "empty-thread" }, "No messages yet."));
    return;
  }
  for (const item of items) {
    thread.append(el("li", { class: "from-" + item.from }, el("span", { class: "meta" }, item.meta), item.text));
  }
}

// -- actions: focus goes back to the alert in the list afterwards ----------------------------------------
async function decide(event, note) {
  const entry = state.alerts.get(state.selected);
  if (!entry || !entry.alertId) return;
  const status = $("action-status");
  const what = event === "ack" ? "Acknowledge" : "Resolve";
  status.textContent = `${what}: sending…`;
  try {
    const r = await api(`/console/api/alerts/${encodeURIComponent(entry.alertId)}/${event}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ note: note || "" }),
    });
    const body = await r.json().catch(() => ({}));
    const code = body.bridge_status;
    if (r.ok && code >= 200 && code < 300) {
      status.textContent = event === "ack" ? "Acknowledged: the person is told help is on the way." : "Resolved.";
      if (event === "resolve") {
        $("resolve-form").hidden = true;
        $("resolve-reason").value = "";
      }
    } else if (code === 0) {
      status.textContent = `${what} failed: the bridge could not be reached.`;
    } else {
      status.textContent = `${what} refused by the bridge (${code || r.status}).`;
    }
  } catch (err) {
    if (err instanceof AuthError) return showLogin("The control token was refused.");
    status.textContent = `${what} failed: ${err}`;
  }
  await refreshBridge(entry, true);
  renderList();
  renderDetail();
  focusItem(entry.key);
}

function askResolve() {
  $("resolve-form").hidden = false;
  $("resolve-reason").focus();
}

function cancelResolve() {
  $("resolve-form").hidden = true;
  $("resolve-reason").value = "";
  $("action-status").textContent = "Not resolved: the alert stays open.";
  focusItem(state.selected);
}

function confirmResolve(event) {
  event.preventDefault();
  const reason = $("resolve-reason").value.trim();
  if (!reason) {
    $("action-status").textContent = "Say why the alert is resolved first.";
    $("resolve-reason").focus();
    return;
  }
  decide("resolve", reason);
}

async function sendMessage(event) {
  event.preventDefault();
  const entry = state.alerts.get(state.selected);
  const text = $("message-text").value.trim();
  const status = $("message-status");
  if (!entry || !entry.alertId) return;
  if (!text) {
    status.textContent = "Type a message first.";
    $("message-text").focus();
    return;
  }
  $("send").disabled = true;
  status.textContent = "Sending…";
  try {
    const r = await api(`/console/api/alerts/${encodeURIComponent(entry.alertId)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, audible: false }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.status === 201) {
      $("message-text").value = "";
      status.textContent = body.discreet ? "Sent discreetly (no sound at the person's end)." : "Sent.";
    } else {
      status.textContent = `Not sent: ${body.reason || body.error || body.detail || "the bridge answered " + r.status}`;
    }
  } catch (err) {
    if (err instanceof AuthError) return showLogin("The control token was refused.");
    status.textContent = `Not sent: ${err}`;
  }
  await refreshBridge(entry, true);
  renderDetail();
  $("message-text").focus();
}

// -- start ----------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("ack").addEventListener("click", () => decide("ack", ""));
  $("resolve").addEventListener("click", askResolve);
  $("resolve-form").addEventListener("submit", confirmResolve);
  $("resolve-cancel").addEventListener("click", cancelResolve);
  $("resolve-form").addEventListener("keydown", (e) => {
    if (e.key === "Escape") cancelResolve();
  });
  $("message-form").addEventListener("submit", sendMessage);
  for (const id of ["filter-state", "filter-kind", "filter-silent"]) $(id).addEventListener("change", onFilter);
  start();
});
