// chat.js: the chatserver page, built on the JavaScript client
// (/static/chatserver.js, which is clients/js/chatserver.js). An ES module, no
// build step, no inline code (the page's CSP allows only same-origin scripts
// and styles).
//
// The client does the protocol: reconnect with backoff and jitter, recovery
// with ?since= (each message once), acks. The page draws: the first paint is
// the history the server rendered into the page (html/template, escaped; in
// signed and jwt identity modes the server renders none, and the history
// frame fills the list). Live messages, and those a reconnect adds, use the
// envelope's html, rendered by the server's render_html step. An envelope
// without html (no render_html step, or a body changed after it) is built here
// from its fields, as templates/message.html would, with textContent only:
// user strings never reach innerHTML.
import { connect } from "./chatserver.js";

// Record CSP violations so tests (and curious developers) can see them.
window.__cspViolations = window.__cspViolations || [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});

const NEAR_BOTTOM = 80; // px
const COOKIE = "username";
// Typing: a signal at most every TYPING_EVERY ms while the user types (the
// default config's typing pipeline allows 2 a second); a name stays shown
// TYPING_SHOWN ms after its last signal, or until that member's message.
const TYPING_EVERY = 1500;
const TYPING_SHOWN = 4000;

let room, inbox, statusEl, statusText, nameInput, msgInput, sendForm, formError;
let membersEl, memberCount, memberCountToggle, typingEl;
let client = null;
let errorTimer = null;

// Members keyed by client_id: ids are unique across a cluster (each node
// numbers its connections in a range of its own, below 2^53, so a JavaScript
// number holds them exactly); a restarted server numbers anew, and the map is
// rebuilt from the members list on every connect. While the members request
// of a connection is in flight, online/offline events are also kept in
// pending, to be replayed over the snapshot when it arrives.
let members = new Map();
let pending = null;
let membersSeq = 0;

// Who is typing: client_id -> {name, timer}.
const typing = new Map();
let typingSentAt = 0;
let typingOff = false; // the server has no typing kind
// Our own typing signals come back to us. Until the client knows its
// client_id (from an ack), typing envelopes that arrive while a signal of
// ours waits for its ack are held, and those whose id an ack names are ours.
let ownTypingInFlight = 0;
let heldTyping = [];
const ownTypingIds = new Set();

// --- username cookie (base64 of UTF-8, as in the seed) ---

function b64encode(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin);
}

function b64decode(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  const bin = atob(s);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

function readName() {
  const parts = document.cookie ? document.cookie.split("; ") : [];
  for (const part of parts) {
    const eq = part.indexOf("=");
    if (part.slice(0, eq) !== COOKIE) continue;
    let v = part.slice(eq + 1);
    if (v.charAt(0) === '"') v = v.slice(1, -1);
    try {
      return b64decode(decodeURIComponent(v));
    } catch (e) {
      return "";
    }
  }
  return "";
}

function saveName(name) {
  const secure = location.protocol === "https:" ? "; secure" : "";
  if (name) {
    document.cookie = COOKIE + "=" + b64encode(name) + "; path=/; max-age=31536000; samesite=lax" + secure;
  } else {
    document.cookie = COOKIE + "=; path=/; max-age=0; samesite=lax" + secure;
  }
}

function currentName() {
  return nameInput.value.trim();
}

// --- message list ---

function nearBottom() {
  return inbox.scrollHeight - inbox.scrollTop - inbox.clientHeight < NEAR_BOTTOM;
}

function scrollToBottom() {
  inbox.scrollTop = inbox.scrollHeight;
}

function markMine(el) {
  const name = currentName();
  const user = el.querySelector(".user");
  if (name && user && user.textContent === name) el.classList.add("mine");
}

// messageElement builds a message envelope's element from its fields, with
// the structure and classes of templates/message.html:
// div.message#m{id} > span.meta > (b.user, time); span.body.
function messageElement(env) {
  const el = document.createElement("div");
  el.className = "message";
  if (env.id) el.id = "m" + env.id;
  el.dataset.client = String(env.client_id || 0);
  const meta = document.createElement("span");
  meta.className = "meta";
  const user = document.createElement("b");
  user.className = "user";
  user.textContent = String(env.username || "");
  const time = document.createElement("time");
  time.setAttribute("datetime", String(env.datetime || ""));
  time.textContent = String(env.datetime || "");
  meta.appendChild(user);
  meta.appendChild(document.createTextNode(" "));
  meta.appendChild(time);
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = String(env.body || "");
  el.appendChild(meta);
  el.appendChild(body);
  return el;
}

// appendEnvelope shows a message envelope, unless a message with its id is
// already shown (the server rendered it into the page): its server-rendered
// html, or, without html, an element built from its fields. It reports
// whether it inserted.
function appendEnvelope(env) {
  if (env.id && document.getElementById("m" + env.id)) return false;
  let el;
  if (typeof env.html === "string" && env.html) {
    inbox.insertAdjacentHTML("beforeend", env.html);
    el = inbox.lastElementChild;
  } else {
    el = messageElement(env);
    inbox.appendChild(el);
  }
  if (el && el.classList.contains("message")) {
    markMine(el);
    if (env.to) markDirect(el, env.to);
  }
  return true;
}

// markDirect shows that a message went to one member (and its sender) only.
function markDirect(el, to) {
  el.classList.add("direct");
  const meta = el.querySelector(".meta");
  if (!meta) return;
  const label = document.createElement("span");
  label.className = "to";
  label.textContent = "→ " + String(to) + " (private)";
  meta.appendChild(document.createTextNode(" "));
  meta.appendChild(label);
}

function notice(text, kind) {
  const stick = nearBottom();
  const el = document.createElement("div");
  el.className = "notice" + (kind ? " " + kind : "");
  el.textContent = text;
  inbox.appendChild(el);
  if (stick) scrollToBottom();
}

// --- members ---

function renderMembers() {
  const list = Array.from(members.entries()).sort(function (a, b) {
    return a[1].localeCompare(b[1]) || a[0] - b[0];
  });
  membersEl.textContent = "";
  for (const m of list) {
    const li = document.createElement("li");
    li.dataset.client = String(m[0]);
    li.textContent = m[1];
    membersEl.appendChild(li);
  }
  memberCount.textContent = String(list.length);
  memberCountToggle.textContent = String(list.length);
}

function applyPresence(env) {
  if (env.type === "online") members.set(env.client_id, env.username || "");
  else if (env.type === "offline") members.delete(env.client_id);
}

function loadMembers() {
  const seq = ++membersSeq;
  pending = [];
  client.members().then(
    function (list) {
      if (seq !== membersSeq) return;
      members = new Map();
      for (const m of list || []) members.set(m.client_id, m.username || "");
      for (const env of pending || []) applyPresence(env);
      pending = null;
      renderMembers();
    },
    function () {
      if (seq === membersSeq) pending = null; // keep what events told us
    },
  );
}

// --- typing ---

function renderTyping() {
  const names = Array.from(typing.values(), function (t) {
    return t.name;
  });
  let text = "";
  if (names.length === 1) text = names[0] + " is typing…";
  else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
  else if (names.length > 2) text = names.length + " people are typing…";
  typingEl.textContent = text;
}

function stopTyping(clientId) {
  const t = typing.get(clientId);
  if (!t) return;
  clearTimeout(t.timer);
  typing.delete(clientId);
  renderTyping();
}

function onTyping(env, meta) {
  if (meta && meta.fromHistory) return; // a kept signal from the past
  if (env.client_id === client.clientId) return; // our own signal
  if (client.clientId === null && ownTypingInFlight > 0) {
    heldTyping.push(env); // ours or not: the ack will tell
    return;
  }
  if (ownTypingIds.has(env.id)) return;
  showTyping(env);
}

function releaseTyping() {
  if (ownTypingInFlight > 0) return;
  const held = heldTyping;
  heldTyping = [];
  for (const env of held) {
    if (env.client_id !== client.clientId && !ownTypingIds.has(env.id)) showTyping(env);
  }
}

function showTyping(env) {
  const id = env.client_id;
  const old = typing.get(id);
  if (old) clearTimeout(old.timer);
  typing.set(id, {
    name: env.username || "someone",
    timer: setTimeout(function () {
      stopTyping(id);
    }, TYPING_SHOWN),
  });
  renderTyping();
}

// signalTyping tells the room that this member types, at most every
// TYPING_EVERY ms. It is volatile: never queued, never resent.
function signalTyping() {
  if (typingOff || !msgInput.value.trim()) return;
  const now = Date.now();
  if (now - typingSentAt < TYPING_EVERY) return;
  typingSentAt = now;
  const frame = { type: "typing" };
  const name = currentName();
  if (name) frame.username = name;
  ownTypingInFlight++;
  client.send(frame, { volatile: true }).then(
    function (ack) {
      ownTypingInFlight--;
      if (ack && ack.id) {
        ownTypingIds.add(ack.id);
        if (ownTypingIds.size > 16) ownTypingIds.delete(ownTypingIds.values().next().value);
      }
      releaseTyping();
    },
    function (err) {
      ownTypingInFlight--;
      releaseTyping();
      // Typing is best effort; a server without the kind (or an older one
      // refusing the field) turns it off for this page.
      if (err && (err.code === "unknown_type" || err.code === "invalid_json")) typingOff = true;
    },
  );
}

// --- connection ---

function setStatus(state, text) {
  statusEl.className = "status " + state;
  statusText.textContent = text;
}

function showError(text) {
  formError.textContent = text;
  formError.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(function () {
    formError.hidden = true;
  }, 4000);
}

function onMessage(env) {
  const stick = nearBottom() || (currentName() && env.username === currentName());
  if (appendEnvelope(env) && stick) scrollToBottom();
  stopTyping(env.client_id);
  if (members.has(env.client_id) && env.username && members.get(env.client_id) !== env.username) {
    members.set(env.client_id, env.username);
    renderMembers();
  }
}

function onPresence(env, meta) {
  if (meta && meta.fromHistory) return; // kept presence from the past: the members list says who is here
  applyPresence(env);
  if (pending) pending.push(env);
  if (env.type === "offline") stopTyping(env.client_id);
  renderMembers();
  notice((env.username || "someone") + (env.type === "online" ? " joined" : " left"), env.type);
}

function start() {
  // Resume after the last message the server rendered into the page: the
  // history frame then brings only what came since.
  const rendered = inbox.querySelectorAll(".message[id^='m']");
  const last = rendered.length ? rendered[rendered.length - 1].id.slice(1) : "";
  client = connect("/", last ? { room: room, since: last } : { room: room });
  let everConnected = false;
  client.on("state", function (state) {
    if (state === "connecting") setStatus("connecting", everConnected ? "reconnecting…" : "connecting…");
    else if (state === "connected") setStatus("online", "connected");
    else if (state === "closed") setStatus("offline", "disconnected");
  });
  client.on("disconnect", function (d) {
    for (const id of Array.from(typing.keys())) stopTyping(id);
    if (d.reconnect) setStatus("offline", "offline — retrying in " + Math.max(1, Math.round(d.delay / 1000)) + "s");
    else showError("Disconnected: " + (d.reason || "closed by the server") + ".");
  });
  client.on("history", function (frame) {
    if (everConnected && frame.complete === false) notice("Some earlier messages may be missing.", "gap");
  });
  client.on("gap", function (g) {
    // A node held more than broker.outbox_size frames while Redis was away.
    const n = g.data && g.data.missed;
    notice((n ? n + " messages" : "Some messages") + " sent during a server outage were lost.", "gap");
  });
  client.on("message", onMessage);
  client.on("online", onPresence);
  client.on("offline", onPresence);
  client.on("typing", onTyping);
  client.on("delete", function (d) {
    const el = d.id && document.getElementById("m" + d.id);
    if (el) el.remove();
  });
  client.on("error", function (e) {
    // Errors answering a send() are shown by send's rejection.
    if (e.ref === undefined) showError(e.reason || e.code || "error");
  });
  client.on("connect", function () {
    if (!everConnected) scrollToBottom();
    everConnected = true;
    loadMembers();
  });
}

function send(e) {
  e.preventDefault();
  const body = msgInput.value;
  if (!body.trim()) return;
  if (client.state !== "connected") {
    showError("Not connected — your message was not sent.");
    return;
  }
  const frame = { body: body };
  const name = currentName();
  if (name) frame.username = name;
  if (name !== readName()) saveName(name);
  client.send(frame).catch(function (err) {
    if (err.code !== "closed") showError(err.reason || err.code || "error");
  });
  typingSentAt = 0;
  msgInput.value = "";
  msgInput.focus();
}

function init() {
  room = document.body.dataset.room || "lobby";
  inbox = document.getElementById("inbox");
  statusEl = document.getElementById("status");
  statusText = document.getElementById("status-text");
  nameInput = document.getElementById("name");
  msgInput = document.getElementById("message");
  sendForm = document.getElementById("send-form");
  formError = document.getElementById("form-error");
  membersEl = document.getElementById("members");
  memberCount = document.getElementById("member-count");
  memberCountToggle = document.getElementById("member-count-toggle");
  typingEl = document.getElementById("typing");

  nameInput.value = readName();
  nameInput.addEventListener("change", function () {
    saveName(currentName());
  });
  nameInput.addEventListener("keydown", function (e) {
    if (e.key === "Enter") {
      e.preventDefault();
      saveName(currentName());
      msgInput.focus();
    }
  });
  sendForm.addEventListener("submit", send);
  msgInput.addEventListener("input", signalTyping);

  const toggle = document.getElementById("members-toggle");
  toggle.addEventListener("click", function () {
    const open = document.body.classList.toggle("show-members");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });

  inbox.querySelectorAll(".message").forEach(markMine);
  scrollToBottom();
  start();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
