// SOS Bridge operator console: plain JavaScript, no framework, no CDN. It long-polls the receiver's
// /console/api/changes and builds every element with textContent (contact fields are never parsed as HTML).
"use strict";

const TOKEN_KEY = "sosbridge-console-token";
const WAIT_S = 20;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  since: 0,
  activitySince: 0,
  alerts: new Map(), // key -> {key, alertId, records: [], activity: [], firstIndex, lastIndex}
  selected: null,
  generation: 0, // bumps on sign-in/out so an old poll loop stops
  started: false,
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

function alertKey(record) {
  const c = record.contact || {};
  return c.alert_id || c.identifier || "record-" + record.index;
}

function entryFor(key, alertId) {
  let entry = state.alerts.get(key);
  if (!entry) {
    entry = { key, alertId: alertId || null, records: [], activity: [], lastIndex: -1, fresh: true };
    state.alerts.set(key, entry);
  }
  return entry;
}

function apply(data, live) {
  if (data.reset) {
    state.alerts.clear();
    state.selected = null;
  }
  const newAlerts = [];
  for (const record of data.records) {
    const c = record.contact || {};
    const key = alertKey(record);
    const isNew = !state.alerts.has(key);
    const entry = entryFor(key, c.alert_id);
    entry.records.push(record);
    entry.lastIndex = record.index;
    if (isNew) newAlerts.push(entry);
    else if (live) entry.fresh = true;
  }
  for (const act of data.activity) {
    const entry = state.alerts.get(act.alert_id);
    if (entry) entry.activity.push(act);
  }
  state.since = data.next;
  state.activitySince = data.activity_next;
  if (!live) for (const e of state.alerts.values()) e.fresh = false;
  if (live && newAlerts.length) {
    const e = newAlerts[newAlerts.length - 1];
    const c = latestContact(e);
    $("announce").textContent =
      `New ${c.silent ? "silent " : ""}${c.kind || "contact"}${c.person && c.person.name ? " from " + c.person.name : ""}`;
  }
  if (state.selected === null && state.alerts.size) state.selected = sorted()[0].key;
  renderList();
  renderDetail();
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

function currentState(entry) {
  let s = latestContact(entry).state || null;
  for (const act of entry.activity) {
    if (act.bridge_status >= 200 && act.bridge_status < 300) {
      if (act.type === "ack" && s !== "resolved" && s !== "cancelled") s = "acknowledged";
      if (act.type === "resolve") s = "resolved";
    }
  }
  return s;
}

function sorted() {
  return [...state.alerts.values()].sort((a, b) => b.lastIndex - a.lastIndex);
}

function statusLabel(status) {
  if (status === "exercise") return "EXERCISE";
  if (status === "test") return "TEST";
  return null;
}

function badges(contact, entry) {
  const out = [];
  const ex = statusLabel(contact.status);
  if (ex) out.push(el("span", { class: "badge " + contact.status }, ex));
  if (contact.silent) out.push(el("span", { class: "badge silent" }, "SILENT"));
  if (contact.severity) out.push(el("span", { class: "badge " + contact.severity }, contact.severity));
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

// -- the list -------------------------------------------------------------------------------------------
function renderList() {
  const list = $("alert-list");
  const hadFocus = list.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  list.replaceChildren();
  const entries = sorted();
  $("empty").hidden = entries.length > 0;
  $("alert-count").textContent = entries.length ? `(${entries.length})` : "";
  for (const entry of entries) {
    const c = latestContact(entry);
    const first = firstContact(entry);
    const who = (c.person && c.person.name) || (c.device && c.device.id) || c.sender || "unknown";
    const button = el(
      "button",
      {
        type: "button",
        class: "alert-item" + (entry.fresh ? " fresh" : ""),
        "data-key": entry.key,
        "data-alert-id": entry.alertId,
        "aria-current": entry.key === state.selected ? "true" : "false",
      },
      el("span", { class: "line1" }, ...badges(c, entry), `${c.kind || c.format || "contact"} · ${who}`),
      el("br"),
      el("span", { class: "line2" }, `${fmtTime(first.occurred_at || entry.records[0].received_at)} · ` +
        `${entry.records.length} contact${entry.records.length === 1 ? "" : "s"}`)
    );
    button.addEventListener("click", () => select(entry.key));
    button.addEventListener("keydown", onListKey);
    list.append(el("li", {}, button));
  }
  if (hadFocus) {
    const again = list.querySelector(`[data-key="${CSS.escape(hadFocus)}"]`);
    if (again) again.focus();
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
    next.focus();
  }
}

function select(key) {
  state.selected = key;
  const entry = state.alerts.get(key);
  if (entry) entry.fresh = false;
  renderList();
  renderDetail();
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

function mapLink(loc) {
  const lat = Number(loc.lat).toFixed(6);
  const lon = Number(loc.lon).toFixed(6);
  const href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=17/${lat}/${lon}`;
  return el("a", { href, target: "_blank", rel: "noopener noreferrer", id: "map-link" },
    "Open in OpenStreetMap (new tab)");
}

function renderDetail() {
  const entry = state.selected ? state.alerts.get(state.selected) : null;
  $("detail-body").hidden = !entry;
  if (!entry) {
    $("detail-h").textContent = "No alert selected";
    return;
  }
  const c = latestContact(entry);
  const who = (c.person && c.person.name) || (c.device && c.device.id) || "";
  $("detail-h").textContent = `${c.silent ? "Silent " : ""}${c.kind || c.format || "contact"}${who ? " · " + who : ""}`;
  $("silent-banner").hidden = !c.silent;
  const ex = statusLabel(c.status);
  $("exercise-banner").hidden = !ex;
  $("exercise-banner").textContent = ex ? `${ex}: not a real emergency. Do not dispatch.` : "";

  const s = currentState(entry);
  const closed = s === "resolved" || s === "cancelled";
  $("ack").disabled = !entry.alertId || closed || s === "acknowledged";
  $("resolve").disabled = !entry.alertId || closed;
  $("send").disabled = !entry.alertId || closed;
  $("message-text").disabled = !entry.alertId || closed;
  $("message-note").textContent = closed
    ? "This alert is closed: no more messages can be sent."
    : c.silent
      ? "Delivered discreetly: shown without sound, never spoken or sent by SMS."
      : "Delivered on the person's own channels (app, watch, speaker, SMS where allowed).";

  const dl = el("dl", { id: "fields", class: "fields" });
  field(dl, "Kind", c.kind, "f-kind");
  field(dl, "Silent", c.silent === undefined ? null : c.silent ? "Yes: do not call or sound anything" : "No", "f-silent");
  field(dl, "Severity", c.severity, "f-severity");
  field(dl, "State", s, "f-state");
  field(dl, "Status", c.status === "actual" ? "actual (real)" : c.status, "f-status");
  // A message contact's reason is always "message from the person": the reason of the last other contact.
  const other = [...entry.records].reverse().find((r) => r.contact && r.contact.msg_type !== "message");
  field(dl, "Reason", other ? other.contact.reason : c.reason);
  const p = c.person || {};
  field(dl, "Person", p.name, "f-person");
  field(dl, "Phone", p.phone);
  field(dl, "Language", c.language || p.language, "f-language");
  field(dl, "Needs", c.communication_needs && c.communication_needs.length ? c.communication_needs : p.communication_needs, "f-needs");
  field(dl, "Vulnerability notes", p.vulnerability_notes, "f-notes");
  const loc = c.location || null;
  if (loc) {
    if (loc.lat !== null && loc.lat !== undefined && loc.lon !== null && loc.lon !== undefined) {
      const acc = typeof loc.accuracy_m === "number" ? ` ± ${Math.round(loc.accuracy_m)} m` : " (accuracy unknown)";
      field(dl, "Location", `${Number(loc.lat).toFixed(5)}, ${Number(loc.lon).toFixed(5)}${acc}`, "f-location");
      field(dl, "Map", mapLink(loc));
    }
    field(dl, "Location source", (loc.source || "") + (loc.last_known ? " (last known)" : ""), "f-source");
    field(dl, "Fix age", fixAge(loc, c), "f-fix-age");
    field(dl, "Grid reference", loc.grid_ref, "f-grid");
    const civic = loc.civic || {};
    field(dl, "Address", Object.values(civic).filter((v) => typeof v === "string").join(", "));
  }
  const d = c.device || {};
  field(dl, "Device", [d.id, d.label, d.profile].filter(Boolean).join(" · "));
  field(dl, "Transport", d.transport);
  field(dl, "Occurred", fmtTime(c.occurred_at));
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

function renderThread(entry) {
  const items = [];
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
  thread.scrollTop = thread.scrollHeight;
}

// -- actions --------------------------------------------------------------------------------------------
async function control(event) {
  const entry = state.alerts.get(state.selected);
  if (!entry || !entry.alertId) return;
  const status = $("action-status");
  const what = event === "ack" ? "Acknowledge" : "Resolve";
  status.textContent = `${what}: sending…`;
  try {
    const r = await api(`/control/${event}/${encodeURIComponent(entry.alertId)}`, { method: "POST" });
    const body = await r.json().catch(() => ({}));
    const code = body.bridge_status;
    if (r.ok && code >= 200 && code < 300) {
      status.textContent = event === "ack" ? "Acknowledged: the person is told help is on the way." : "Resolved.";
    } else if (code === 0) {
      status.textContent = `${what} failed: the bridge could not be reached.`;
    } else {
      status.textContent = `${what} refused by the bridge (${code || r.status}).`;
    }
  } catch (err) {
    if (err instanceof AuthError) return showLogin("The control token was refused.");
    status.textContent = `${what} failed: ${err}`;
  }
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
  } finally {
    renderDetail();
  }
}

// -- start ----------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("ack").addEventListener("click", () => control("ack"));
  $("resolve").addEventListener("click", () => control("resolve"));
  $("message-form").addEventListener("submit", sendMessage);
  start();
});
