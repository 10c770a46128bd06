// chatserver.js — the JavaScript client of chatserver's WebSocket protocol
// (one ES module, no dependencies, no build step; browsers and Node 22+, or
// Node 20 with --experimental-websocket or a WebSocket class passed in).
//
//   import { connect } from "/static/chatserver.js";
//   const chat = connect("https://chat.example.com", { room: "lobby" });
//   chat.on("message", (m) => console.log(m.username + ": " + m.body));
//   const ack = await chat.send("hello");          // {type: "ack", ref, id}
//
// What it guarantees, and how:
//   - Reconnect: after a close it reconnects with exponential backoff and
//     full jitter (a random delay in [0, min(max, min·2^attempt))); attempt
//     goes back to 0 only after a connection stayed ready for
//     maxReconnectDelay. It stops on close() or on a close the server means
//     as final: 4001 kicked; 4002 token expired, and a refused join (1008
//     before the history frame), when the token is not a function (with a
//     function: after maxRefusals refusals in a row).
//   - Liveness: a browser's WebSocket cannot see the server's pings, so a
//     frame written and not answered within ackTimeout, or a probe sent after
//     probeInterval without any frame and not answered, means the connection
//     is dead (half-open): the client closes it (4000) and reconnects; the
//     frames stay pending and are written again.
//   - Recovery: it reconnects with ?since=<id of the last envelope it saw
//     that the server keeps> (see _keep for the rule), so the server's
//     history frame holds what it missed, and every envelope id is
//     remembered (the last `dedupe` ids, at least the history's size) so that
//     nothing is dispatched twice. Direct messages, system replies and kinds
//     the server does not keep (typing, by default) are live only; so are
//     deletes.
//   - Acks: send() gives each frame a `ref` and resolves with the server's
//     ack, or rejects with a ChatError carrying the server's error code.
//     Frames not yet acknowledged when the connection drops are written again,
//     with the same ref, once it is back: the server acknowledges a ref it
//     already accepted with the first id and does not deliver it twice. It
//     knows the resend by the sender's name (the proven one in signed/jwt
//     mode; in plain mode the frame's `username` — the username option goes
//     with every frame, resends too — else the connection's): a guest with
//     neither gets a new name on each connection, and a frame whose ack was
//     lost may then be delivered twice.
//
// Tokens: the server's username plugin in `jwt` mode reads the token from the
// handshake's query parameter `token` (its option token_param) or from its
// cookie option. The `token` option here is sent as that query parameter; in a
// browser a cookie set by your login (same site) is sent by the browser itself.

/** Envelope types the server sends. */
export const SERVER_TYPES = Object.freeze(["message", "online", "offline", "history", "error", "ack", "delete", "gap"]);

/** Names of the client's own events (not envelope types), and "*" for every frame. */
export const CLIENT_EVENTS = Object.freeze(["connect", "disconnect", "state"]);

/** Close codes the server uses for a final close. */
export const CLOSE_KICKED = 4001;
export const CLOSE_TOKEN_EXPIRED = 4002;

/**
 * ChatError is how a send() fails: `code` is the server's error code
 * (invalid_json, empty, too_long, rate_limited, rejected, internal,
 * unknown_type, no_recipient, …) or one of the client's own: closed (close()
 * was called, or the server closed for good), timeout (no answer within
 * ackTimeout), not_connected (a volatile send while offline), too_big (the
 * frame is over maxFrameBytes, the server's websocket.max_message_bytes).
 */
export class ChatError extends Error {
  constructor(code, reason, ref) {
    super(reason ? code + ": " + reason : code);
    this.name = "ChatError";
    this.code = code;
    this.reason = reason || "";
    if (ref !== undefined) this.ref = ref;
  }
}

const DEFAULTS = {
  room: "lobby",
  token: undefined,
  tokenParam: "token",
  username: undefined,
  minReconnectDelay: 500,
  maxReconnectDelay: 10000,
  ackTimeout: 10000,
  probeInterval: 30000,
  sendTimeout: 0,
  maxRefusals: 3,
  maxFrameBytes: 8192,
  dedupe: 1000,
  WebSocket: undefined,
  fetch: undefined,
  headers: undefined,
};

// Fields an inbound frame may carry; anything else is refused by
// the server, so it is refused here first.
const FRAME_FIELDS = ["type", "body", "username", "data", "to", "ref"];

const encoder = new TextEncoder();

/**
 * connect opens a client of the room at url and returns it at once; it
 * connects in the background (state "connecting", then "connected" once the
 * server's history frame arrived). url is the server's address — http(s) or
 * ws(s), with or without the /chatsocket path; relative URLs resolve against
 * the page's location.
 */
export function connect(url, options) {
  return new Client(url, options);
}

let refSeed = 0;

function randomPrefix() {
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === "function") {
    const a = new Uint32Array(2);
    c.getRandomValues(a);
    return a[0].toString(36) + a[1].toString(36);
  }
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** Client is one member of one room; see connect. */
export class Client {
  constructor(url, options) {
    const o = Object.assign({}, DEFAULTS, options || {});
    this.options = o;
    this.room = o.room;
    /** "connecting" | "connected" | "disconnected" | "closed" */
    this.state = "connecting";
    /** Id of the last kept message seen: the ?since= of the next connect. */
    this.lastId = o.since || "";
    this._urls = resolveURLs(url, o.room);
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== "function") {
      throw new Error("chatserver: no WebSocket: pass options.WebSocket (e.g. the ws package), or use Node 22+ (Node 20: --experimental-websocket)");
    }
    if (!(o.dedupe >= 100)) o.dedupe = 100; // a recovery may bring the whole history again
    this._listeners = new Map();
    this._seen = new Set(); // envelope ids dispatched, oldest first (insertion order)
    this._pending = new Map(); // ref -> {frame, text, resolve, reject, timer, written}, in send order
    this._refPrefix = randomPrefix() + "-";
    this._refN = 0;
    this._ws = null;
    /** This connection's client_id, once an ack told which envelope was ours; null before. */
    this.clientId = null;
    this._ackIds = new Set(); // ids acked to us whose envelope has not arrived yet
    this._idClient = new Map(); // recent envelope id -> client_id
    this._attempt = 0;
    this._refusals = 0;
    this._readyAt = 0; // when the current connection got its history frame; 0 before
    this._refusal = null; // the error frame of a refused join, before any history frame
    this._timer = null;
    this._idle = null; // probe timer: no frame for probeInterval
    this._probeN = 0;
    this._connectedOnce = false;
    this._kept = []; // ids believed kept in history, oldest first (a delete of lastId falls back)
    this._keptKinds = new Set(["message"]); // envelope types seen in a history frame
    this._open();
  }

  /**
   * on registers fn for an envelope type (message, online, offline, history,
   * error, ack, delete, or a custom kind such as typing), for "*" (every frame
   * the server sends), or for a client event: "connect" (each time a
   * connection is ready: its history frame arrived), "disconnect" (a
   * connection ended), "state" (any change of client.state). It returns a
   * function that removes fn.
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** off removes fn from type's listeners; without fn, all of them. */
  off(type, fn) {
    const set = this._listeners.get(type);
    if (!set) return;
    if (fn) set.delete(fn);
    else set.clear();
  }

  /**
   * send sends a message — a string body, or a frame {type, body, username,
   * data, to, ref} — and returns a promise of the server's ack
   * ({type: "ack", ref, id}). The promise rejects with a ChatError whose code
   * is the server's error code. While offline the frame waits and goes out
   * (again, with the same ref) once connected. With {volatile: true} it is
   * sent now or never: offline, the promise rejects with not_connected at
   * once, and if the connection drops before the answer it rejects with
   * not_connected instead of being sent again (for signals that go stale,
   * like typing). A frame that waits for its answer longer than ackTimeout
   * while connected is taken as a dead connection: the client reconnects and
   * writes it again. sendTimeout (off by default) bounds the whole wait: the
   * promise then rejects with "timeout" and the frame is forgotten (it may
   * have been delivered).
   */
  send(message, opts) {
    const frame = typeof message === "string" ? { body: message } : Object.assign({}, message);
    for (const k of Object.keys(frame)) {
      if (!FRAME_FIELDS.includes(k)) {
        return Promise.reject(new ChatError("invalid_json", "unknown field " + JSON.stringify(k) + " (a frame has " + FRAME_FIELDS.join(", ") + ")"));
      }
      if (frame[k] === undefined) delete frame[k];
    }
    if (frame.username === undefined && this.options.username) frame.username = this.options.username;
    if (this.state === "closed") return Promise.reject(new ChatError("closed", "the client is closed"));
    const volatile = !!(opts && opts.volatile);
    if (volatile && this.state !== "connected") return Promise.reject(new ChatError("not_connected", "not connected"));
    if (frame.ref === undefined) frame.ref = this._refPrefix + (++this._refN).toString(36) + "." + (++refSeed).toString(36);
    const ref = String(frame.ref);
    if (this._pending.has(ref)) return Promise.reject(new ChatError("invalid_json", "ref " + JSON.stringify(ref) + " is already waiting for its ack"));
    const text = JSON.stringify(frame);
    if (encoder.encode(text).length > this.options.maxFrameBytes) return Promise.reject(tooBig(this.options.maxFrameBytes));
    return new Promise((resolve, reject) => {
      const p = { frame, text, resolve, reject, timer: null, ackTimer: null, written: false, volatile };
      if (this.options.sendTimeout > 0) {
        p.timer = setTimeout(() => {
          this._settle(ref, null, new ChatError("timeout", "no answer from the server within " + this.options.sendTimeout + " ms", ref));
        }, this.options.sendTimeout);
      }
      this._pending.set(ref, p);
      if (this.state === "connected") this._write(p);
    });
  }

  /** pending is how many sent frames wait for their ack. */
  get pending() {
    return this._pending.size;
  }

  /**
   * members returns who is in the room now, on every node:
   * GET /api/rooms/{room}/members → [{client_id, username}]. Rooms that admit
   * proven members only answer those who prove it as they would join: the
   * token goes along as the query parameter, a browser sends its cookie.
   */
  async members() {
    const f = this.options.fetch || globalThis.fetch;
    const init = { credentials: "same-origin" };
    if (this.options.headers) init.headers = this.options.headers;
    let url = this._urls.members;
    const token = await this._token();
    if (token && this.options.tokenParam) url += "?" + encodeURIComponent(this.options.tokenParam) + "=" + encodeURIComponent(token);
    const r = await f(url, init);
    if (!r.ok) throw new ChatError("http_" + r.status, "GET " + this._urls.members + ": HTTP " + r.status);
    return r.json();
  }

  // _token returns the token option's value, calling it if it is a function.
  async _token() {
    const t = this.options.token;
    return typeof t === "function" ? t() : t;
  }

  /**
   * close closes the connection for good: no reconnect, and every send still
   * waiting for its ack rejects with code "closed".
   */
  close() {
    if (this.state === "closed") return;
    this._final(1000, "closed by the client", true);
  }

  // --- internals ---

  _setState(state) {
    const old = this.state;
    if (old === state) return;
    this.state = state;
    this._emit("state", state, old);
  }

  _emit(type, a, b) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of Array.from(set)) {
      try {
        fn(a, b);
      } catch (e) {
        // A listener's bug must not stop the others or the client.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  async _open() {
    this._timer = null;
    let url = this._urls.socket;
    const q = [];
    if (this.lastId) q.push("since=" + encodeURIComponent(this.lastId));
    let token;
    try {
      token = await this._token();
    } catch (e) {
      this._scheduleReconnect({ code: 0, reason: "token: " + (e && e.message ? e.message : String(e)) });
      return;
    }
    if (this.state === "closed") return;
    if (token && this.options.tokenParam) q.push(encodeURIComponent(this.options.tokenParam) + "=" + encodeURIComponent(token));
    if (q.length) url += "&" + q.join("&");
    let ws;
    try {
      ws = this._newSocket(url);
    } catch (e) {
      this._scheduleReconnect({ code: 0, reason: e && e.message ? e.message : String(e) });
      return;
    }
    this._ws = ws;
    this._readyAt = 0;
    this._refusal = null;
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      this._alive();
      if (typeof ev.data !== "string") return; // the server sends text frames only
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (f && typeof f === "object") this._handle(f);
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._closed(ev.code, ev.reason || "");
    };
    ws.onerror = () => {
      // A close event follows (with the server's code, if it sent one),
      // except in Node 20's WebSocket when the connection failed: that
      // socket stays CONNECTING with no close event, so it is given up here.
      if (ws !== this._ws || ws.readyState !== 0) return;
      this._ws = null;
      this._closed(1006, "connection failed");
    };
  }

  // _newSocket opens the WebSocket; the headers option goes into the
  // handshake where the implementation takes it: the ws package's
  // (url, protocols, {headers}) and Node's own (url, {headers}). A browser's
  // WebSocket takes none (it sends the site's cookies itself).
  _newSocket(url) {
    const h = this.options.headers;
    if (!h || typeof document !== "undefined") return new this._WS(url);
    if (typeof this._WS.Server === "function" || typeof this._WS.createWebSocketStream === "function") return new this._WS(url, [], { headers: h });
    return new this._WS(url, { headers: h });
  }

  // _alive notes that a frame arrived: the connection works; the idle probe
  // waits probeInterval again.
  _alive() {
    clearTimeout(this._idle);
    this._idle = null;
    if (this.options.probeInterval > 0 && this.state === "connected") {
      this._idle = setTimeout(() => this._probe(), this.options.probeInterval);
    }
  }

  // _probe asks the server for an answer without side effects: a frame of
  // type "join", which clients may not send, is answered by an error
  // (unknown_type) with its ref. No answer within ackTimeout: dead.
  _probe() {
    const ws = this._ws;
    if (!ws || this.state !== "connected") return;
    const ref = "probe." + this._refPrefix + (++this._probeN).toString(36);
    try {
      ws.send(JSON.stringify({ type: "join", ref }));
    } catch (e) {
      // the close event follows
    }
    this._idle = setTimeout(() => this._dead(ws, "no answer to a probe"), this.options.ackTimeout > 0 ? this.options.ackTimeout : this.options.probeInterval);
  }

  // _dead gives up a connection that stopped answering (half-open TCP): it
  // is closed with 4000 and the client reconnects with the backoff, as after
  // any close; the pending frames stay and are written again.
  _dead(ws, why) {
    if (ws !== this._ws) return;
    this._ws = null;
    try {
      ws.close(4000, why);
    } catch (e) {
      // already closing
    }
    this._closed(4000, why);
  }

  _closed(code, reason) {
    clearTimeout(this._idle);
    this._idle = null;
    if (code === 1009) {
      // The server found a frame too big: the largest frame in flight would
      // only close the next connection again.
      let worst = null;
      for (const [ref, p] of this._pending) {
        if (p.written && (!worst || p.text.length > worst[1].text.length)) worst = [ref, p];
      }
      if (worst) this._settle(worst[0], null, tooBig(this.options.maxFrameBytes));
    }
    for (const [ref, p] of Array.from(this._pending)) {
      if (p.volatile) this._settle(ref, null, new ChatError("not_connected", "the connection dropped before the answer", ref));
      else {
        if (p.written) p.resent = true;
        p.written = false;
        clearTimeout(p.ackTimer);
        p.ackTimer = null;
      }
    }
    this.clientId = null;
    this._ackIds.clear();
    const tokenFn = typeof this.options.token === "function";
    // A 1008 before the history frame is a refused join (a 1008 later is a
    // queue overflow): the same handshake would be refused again.
    const refused = code === 1008 && !this._readyAt;
    if (this._readyAt) {
      this._refusals = 0;
      // Only a connection that lasted resets the backoff: one closed right
      // after its history frame must not make the client hammer the server.
      if (Date.now() - this._readyAt >= this.options.maxReconnectDelay) this._attempt = 0;
    }
    if (refused) this._refusals++;
    this._readyAt = 0;
    const final =
      code === CLOSE_KICKED ||
      (code === CLOSE_TOKEN_EXPIRED && !tokenFn) ||
      (refused && (!tokenFn || this._refusals >= this.options.maxRefusals));
    if (final) {
      if (refused && this._refusal && this._refusal.reason) reason = (reason || "join refused") + ": " + this._refusal.reason;
      this._final(code, reason, false);
      return;
    }
    this._scheduleReconnect({ code, reason });
  }

  _scheduleReconnect(info) {
    if (this.state === "closed") return;
    const cap = Math.min(this.options.maxReconnectDelay, this.options.minReconnectDelay * Math.pow(2, this._attempt));
    this._attempt++;
    const delay = Math.floor(Math.random() * cap); // full jitter
    this._setState("disconnected");
    this._emit("disconnect", { code: info.code, reason: info.reason, reconnect: true, delay });
    this._timer = setTimeout(() => {
      if (this.state === "closed") return;
      this._setState("connecting");
      this._open();
    }, delay);
  }

  _final(code, reason, byClient) {
    clearTimeout(this._timer);
    this._timer = null;
    clearTimeout(this._idle);
    this._idle = null;
    const ws = this._ws;
    this._ws = null;
    if (ws && byClient) {
      try {
        ws.close(1000);
      } catch (e) {
        // already closing
      }
    }
    const wasConnected = this.state === "connected";
    this._setState("closed");
    for (const ref of Array.from(this._pending.keys())) {
      this._settle(ref, null, new ChatError("closed", reason || "the connection was closed", ref));
    }
    if (wasConnected || !byClient) this._emit("disconnect", { code, reason, reconnect: false });
  }

  // _write writes p on the open connection, once. A socket already closing
  // (the server's close frame came, its close event not yet) would drop it:
  // it waits for the next connection instead.
  _write(p) {
    const ws = this._ws;
    if (!ws || p.written || ws.readyState !== 1) return;
    p.written = true;
    ws.send(p.text);
    if (this.options.ackTimeout > 0) {
      clearTimeout(p.ackTimer);
      p.ackTimer = setTimeout(() => this._dead(ws, "no answer within " + this.options.ackTimeout + " ms"), this.options.ackTimeout);
    }
  }

  _settle(ref, ack, err) {
    const p = this._pending.get(ref);
    if (!p) return;
    this._pending.delete(ref);
    clearTimeout(p.timer);
    clearTimeout(p.ackTimer);
    if (err) p.reject(err);
    else p.resolve(ack);
  }

  // _fresh reports whether an envelope id has not been dispatched yet, and
  // remembers it.
  _fresh(id) {
    if (!id) return true;
    if (this._seen.has(id)) return false;
    this._seen.add(id);
    if (this._seen.size > this.options.dedupe) this._seen.delete(this._seen.values().next().value);
    return true;
  }

  // _learn records that envelope id was ours: its client_id is this
  // connection's (the ack may come before or after the envelope, as a
  // clustered broker delivers it).
  _learn(id) {
    const cid = this._idClient.get(id);
    if (cid !== undefined) {
      if (cid !== 0) this.clientId = cid;
      return;
    }
    this._ackIds.add(id);
    if (this._ackIds.size > 64) this._ackIds.delete(this._ackIds.values().next().value);
  }

  // _keep moves ?since= (lastId) to a live envelope the server is believed
  // to keep in history. The client cannot know for sure; the rule: an
  // envelope with an id, without `to` (direct messages are never kept), that
  // is not a system reply (username "system" with client_id 0, sent to its
  // asker alone; an API post, client_id 0 with another name, is kept), of
  // type message or of a type seen in a history frame (a kind the server
  // keeps). The history frame's last entry is always kept (_onHistory). A
  // wrong guess costs no message: the server then sends its whole history,
  // marked incomplete, and dedupe drops what was seen.
  _keep(env) {
    if (!env.id || env.to || (env.client_id === 0 && env.username === "system") || !this._keptKinds.has(env.type)) return;
    this.lastId = env.id;
    this._remember(env.id);
  }

  _remember(id) {
    this._kept.push(id);
    if (this._kept.length > this.options.dedupe) this._kept.shift();
  }

  // _forget drops a deleted id; when it was lastId, the kept id before it
  // takes its place (the server's history no longer holds it).
  _forget(id) {
    this._kept = this._kept.filter((k) => k !== id);
    if (this.lastId === id && this._kept.length) this.lastId = this._kept[this._kept.length - 1];
  }

  _handle(f) {
    switch (f.type) {
      case "history":
        this._onHistory(f);
        return;
      case "ack":
        {
          // An ack of a frame first written on an earlier connection names
          // that connection's envelope: it says nothing of this one.
          const p = f.ref !== undefined ? this._pending.get(String(f.ref)) : undefined;
          if (f.id && p && !p.resent) this._learn(f.id);
        }
        this._emit("*", f);
        this._emit("ack", f);
        if (f.ref !== undefined) this._settle(String(f.ref), f, null);
        return;
      case "error":
        if (typeof f.ref === "string" && f.ref.startsWith("probe." + this._refPrefix)) return; // a probe's answer: _alive did its work
        if (f.ref === undefined && !this._readyAt) this._refusal = f; // a refused join: a 1008 close follows
        this._emit("*", f);
        this._emit("error", f);
        if (f.ref !== undefined) this._settle(String(f.ref), null, new ChatError(f.code || "error", f.reason, f.ref));
        return;
      case "delete":
        if (f.id) this._forget(f.id);
        this._emit("*", f);
        this._emit("delete", f);
        return;
    }
    if (!this._fresh(f.id)) return;
    this._keep(f);
    if (f.id && typeof f.client_id === "number") {
      this._idClient.set(f.id, f.client_id);
      if (this._idClient.size > 64) this._idClient.delete(this._idClient.keys().next().value);
      if (this._ackIds.delete(f.id) && f.client_id !== 0) this.clientId = f.client_id;
    }
    this._emit("*", f);
    this._dispatch(f, false);
  }

  _dispatch(env, fromHistory) {
    if (CLIENT_EVENTS.includes(env.type)) return; // a kind named like a client event reaches "*" only
    this._emit(env.type, env, { fromHistory });
  }

  _onHistory(f) {
    const all = (Array.isArray(f.messages) ? f.messages : []).filter((m) => m && typeof m === "object");
    for (const m of all) if (m.type) this._keptKinds.add(m.type); // the server keeps this kind
    const fresh = all.filter((m) => this._fresh(m.id));
    for (const m of fresh) if (m.id) this._remember(m.id);
    // The history frame is the server's record: its last entry is kept,
    // whatever its type.
    const last = all[all.length - 1];
    if (last && last.id) this.lastId = last.id;
    const recovered = this._connectedOnce;
    this._connectedOnce = true;
    this._readyAt = Date.now();
    const frame = Object.assign({}, f, { messages: fresh });
    this._emit("*", frame);
    this._emit("history", frame);
    for (const m of fresh) this._dispatch(m, true);
    this._setState("connected");
    this._alive();
    this._emit("connect", { recovered, complete: f.complete !== false });
    for (const p of Array.from(this._pending.values())) this._write(p);
  }
}

function tooBig(max) {
  return new ChatError("too_big", "the frame is over " + max + " bytes (websocket.max_message_bytes)");
}

// resolveURLs returns the WebSocket URL (with ?room=) and the members URL.
function resolveURLs(url, room) {
  const base = globalThis.location && globalThis.location.href ? globalThis.location.href : undefined;
  const u = new URL(url === undefined || url === "" ? "/" : url, base);
  let path = u.pathname.replace(/\/+$/, "");
  if (path.endsWith("/chatsocket")) path = path.slice(0, -"/chatsocket".length);
  const secure = u.protocol === "https:" || u.protocol === "wss:";
  const host = u.host;
  const r = encodeURIComponent(room);
  return {
    socket: (secure ? "wss://" : "ws://") + host + path + "/chatsocket?room=" + r,
    members: (secure ? "https://" : "http://") + host + path + "/api/rooms/" + r + "/members",
  };
}
