// chat.js: the chatserver page. Plain JS, no build step, no inline code (the
// page's CSP allows only same-origin scripts and styles).
//
// Wire protocol (SPEC §5): the server sends one JSON envelope per frame, typed
// history | message | online | offline | error; the page sends
// {"body": "...", "username": "..."}. The first paint is the history the server
// rendered into the page (html/template, escaped); live messages, and those a
// reconnect adds, use the envelope's html, rendered by the server's
// render_html step. An envelope without html (no render_html step, or a body
// changed after it) is built here from its fields, as templates/message.html
// would, with textContent only: user strings never reach innerHTML.
"use strict";

// Record CSP violations so tests (and curious developers) can see them.
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});

(function () {
  var BACKOFF_MIN = 500;
  var BACKOFF_MAX = 10000;
  var NEAR_BOTTOM = 80; // px
  var COOKIE = "username";

  var room, inbox, statusEl, statusText, nameInput, msgInput, sendForm, formError;
  var membersEl, memberCount, memberCountToggle;

  var ws = null;
  var connectedOnce = false; // a history frame was handled at least once
  var attempt = 0;
  var reconnectTimer = null;
  var lastId = "";
  var errorTimer = null;

  // Members keyed by client_id. While the members request of a connection is
  // in flight, online/offline events are also kept in pending, to be replayed
  // over the snapshot when it arrives.
  var members = new Map();
  var pending = null;
  var membersSeq = 0;

  // --- username cookie (base64 of UTF-8, as in the seed) ---

  function b64encode(s) {
    var bytes = new TextEncoder().encode(s);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin);
  }

  function b64decode(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder().decode(bytes);
  }

  function readName() {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) !== COOKIE) continue;
      var v = parts[i].slice(eq + 1);
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
    var secure = location.protocol === "https:" ? "; secure" : "";
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
    var name = currentName();
    var user = el.querySelector(".user");
    if (name && user && user.textContent === name) el.classList.add("mine");
  }

  // messageElement builds a message envelope's element from its fields, with
  // the structure and classes of templates/message.html:
  // div.message#m{id} > span.meta > (b.user, time); span.body.
  function messageElement(env) {
    var el = document.createElement("div");
    el.className = "message";
    if (env.id) el.id = "m" + env.id;
    el.dataset.client = String(env.client_id || 0);
    var meta = document.createElement("span");
    meta.className = "meta";
    var user = document.createElement("b");
    user.className = "user";
    user.textContent = String(env.username || "");
    var time = document.createElement("time");
    time.setAttribute("datetime", String(env.datetime || ""));
    time.textContent = String(env.datetime || "");
    meta.appendChild(user);
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(time);
    var body = document.createElement("span");
    body.className = "body";
    body.textContent = String(env.body || "");
    el.appendChild(meta);
    el.appendChild(body);
    return el;
  }

  // appendEnvelope shows a message envelope, unless a message with its id is
  // already shown: its server-rendered html, or, without html, an element
  // built from its fields. It reports whether it inserted.
  function appendEnvelope(env) {
    if (!env || env.type !== "message") return false;
    if (env.id && document.getElementById("m" + env.id)) return false;
    var el;
    if (typeof env.html === "string" && env.html) {
      inbox.insertAdjacentHTML("beforeend", env.html);
      el = inbox.lastElementChild;
    } else {
      el = messageElement(env);
      inbox.appendChild(el);
    }
    if (el && el.classList.contains("message")) markMine(el);
    return true;
  }

  function notice(text, kind) {
    var stick = nearBottom();
    var el = document.createElement("div");
    el.className = "notice" + (kind ? " " + kind : "");
    el.textContent = text;
    inbox.appendChild(el);
    if (stick) scrollToBottom();
  }

  // --- members ---

  function renderMembers() {
    var list = Array.from(members.entries()).sort(function (a, b) {
      return a[1].localeCompare(b[1]) || a[0] - b[0];
    });
    membersEl.textContent = "";
    list.forEach(function (m) {
      var li = document.createElement("li");
      li.dataset.client = String(m[0]);
      li.textContent = m[1];
      membersEl.appendChild(li);
    });
    memberCount.textContent = String(list.length);
    memberCountToggle.textContent = String(list.length);
  }

  function applyPresence(env) {
    if (env.type === "online") members.set(env.client_id, env.username || "");
    else if (env.type === "offline") members.delete(env.client_id);
  }

  function loadMembers() {
    var seq = ++membersSeq;
    pending = [];
    fetch("/api/rooms/" + encodeURIComponent(room) + "/members", { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (list) {
        if (seq !== membersSeq) return;
        members = new Map();
        (list || []).forEach(function (m) {
          members.set(m.client_id, m.username || "");
        });
        (pending || []).forEach(applyPresence);
        pending = null;
        renderMembers();
      })
      .catch(function () {
        if (seq === membersSeq) pending = null; // keep what events told us
      });
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

  function socketURL() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + location.host + "/chatsocket?room=" + encodeURIComponent(room);
    if (lastId) url += "&since=" + encodeURIComponent(lastId);
    return url;
  }

  function connect() {
    reconnectTimer = null;
    setStatus("connecting", attempt ? "reconnecting…" : "connecting…");
    var sock;
    try {
      sock = new WebSocket(socketURL());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onmessage = function (ev) {
      if (sock !== ws) return;
      var env;
      try {
        env = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      handle(env);
    };
    sock.onclose = function () {
      if (sock !== ws) return;
      ws = null;
      scheduleReconnect();
    };
    sock.onerror = function () {
      // onclose follows and reconnects.
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    var base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, attempt));
    attempt++;
    var delay = Math.round(base / 2 + Math.random() * base / 2);
    setStatus("offline", "offline — retrying in " + Math.max(1, Math.round(delay / 1000)) + "s");
    reconnectTimer = setTimeout(connect, delay);
  }

  function handle(env) {
    switch (env.type) {
      case "history":
        onHistory(env);
        break;
      case "message": {
        var stick = nearBottom() || (currentName() && env.username === currentName());
        if (appendEnvelope(env) && stick) scrollToBottom();
        // System replies (client_id 0) are never stored in history: resuming
        // ?since= one of them would report a gap that is not there.
        if (env.id && env.client_id !== 0) lastId = env.id;
        if (members.has(env.client_id) && env.username && members.get(env.client_id) !== env.username) {
          members.set(env.client_id, env.username);
          renderMembers();
        }
        break;
      }
      case "online":
      case "offline":
        applyPresence(env);
        if (pending) pending.push(env);
        renderMembers();
        notice((env.username || "someone") + (env.type === "online" ? " joined" : " left"), env.type);
        break;
      case "delete": {
        // The server API deleted a message: it leaves every screen too.
        var gone = env.id && document.getElementById("m" + env.id);
        if (gone) gone.remove();
        break;
      }
      case "error":
        showError(env.reason || env.code || "error");
        break;
    }
  }

  function onHistory(frame) {
    attempt = 0;
    setStatus("online", "connected");
    var msgs = (frame.messages || []).filter(function (m) {
      return m && m.type === "message";
    });
    if (frame.messages && frame.messages.length) {
      var last = frame.messages[frame.messages.length - 1];
      if (last && last.id) lastId = last.id;
    }
    if (!connectedOnce) {
      // The server rendered the history into the page from the stored fields
      // (html/template, escaped); keep it, and add only what is newer.
      connectedOnce = true;
      msgs.forEach(appendEnvelope);
      scrollToBottom();
    } else {
      var stick = nearBottom();
      if (frame.complete === false) notice("Some earlier messages may be missing.", "gap");
      var added = 0;
      msgs.forEach(function (m) {
        if (appendEnvelope(m)) added++;
      });
      if (added && stick) scrollToBottom();
    }
    loadMembers();
  }

  function send(e) {
    e.preventDefault();
    var body = msgInput.value;
    if (!body.trim()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError("Not connected — your message was not sent.");
      return;
    }
    var frame = { body: body };
    var name = currentName();
    if (name) frame.username = name;
    if (name !== readName()) saveName(name);
    ws.send(JSON.stringify(frame));
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

    var toggle = document.getElementById("members-toggle");
    toggle.addEventListener("click", function () {
      var open = document.body.classList.toggle("show-members");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });

    inbox.querySelectorAll(".message").forEach(markMine);
    scrollToBottom();
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
