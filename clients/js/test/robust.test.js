// The client where the network or the server misbehaves: lost acks,
// half-open connections, connections that end as soon as they are ready,
// and what ?since= follows. A real chatserver process, real WebSockets.
import { test, after } from "node:test";
import assert from "node:assert/strict";

import { connect, ChatError } from "../chatserver.js";
import { Server, until, named, faulty, recorder, sleep, WS, WSPackage } from "./server.js";

const quick = { minReconnectDelay: 20, maxReconnectDelay: 200 };
const key = "b".repeat(40);
// The default pipelines with room for bursts, /who, and the server API.
const config = `pipelines:
  message:
    - use: username
      with: { allow_rename: true, max_length: 32 }
    - use: validate
      with: { max_length: 2000 }
    - use: ratelimit
      with: { rate: 100000, burst: 100000 }
    - use: render_html
    - use: commands
    - use: history
    - use: broadcast
api: { keys: ["${key}"] }
`;

const clients = [];
let server;
async function srv() {
  server ??= new Server(config).start();
  return server;
}
after(async () => {
  for (const c of clients) c.close();
  if (server) await (await server).close();
});
function client(url, options) {
  const c = connect(url, Object.assign({ WebSocket: WS }, quick, options));
  clients.push(c);
  return c;
}
const connected = (c) => until(c.room + " connected", () => c.state === "connected");
async function history(s, room) {
  return (await fetch(s.url + "/api/rooms/" + room + "/history?limit=100")).json();
}
function api(s, room, method, path, body) {
  return fetch(s.url + "/api/rooms/" + room + path, {
    method,
    headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
    body: body && JSON.stringify(body),
  });
}

// The first ack is lost and the connection closes: the frame is written
// again on the next connection, same ref, and the server recognises it by
// the sender's name — the cookie's, or, for a guest, the username the
// client sends with every frame (resends too): one copy in history.
for (const [who, options] of [
  ["a named client", { WebSocket: named("lena") }],
  ["a guest with the username option", { username: "gus" }],
]) {
  test("a lost ack, then a close: " + who + "'s message is kept once", async () => {
    const s = await srv();
    const room = "js-lossy-" + (options.username ? "guest" : "named");
    const writes = [];
    let dropped = false;
    const Lossy = faulty(options.WebSocket || WS, {
      onSend: (ws, text) => {
        writes.push(JSON.parse(text));
      },
      onMessage: (ws, f, deliver) => {
        if (f && f.type === "ack" && !dropped) {
          dropped = true;
          ws.close();
          return;
        }
        deliver();
      },
    });
    const c = client(s.url, Object.assign({}, options, { room, WebSocket: Lossy }));
    const rc = recorder(c);
    await connected(c);
    const ack = await c.send("only once");
    assert.ok(dropped, "the first ack was dropped");
    assert.equal(writes.length, 2, "written twice: " + JSON.stringify(writes));
    assert.equal(writes[0].ref, writes[1].ref);
    if (options.username) assert.deepEqual(writes.map((w) => w.username), ["gus", "gus"]);
    const h = await history(s, room);
    assert.deepEqual(h.map((m) => [m.body, m.id]), [["only once", ack.id]], "history holds it once");
    await c.send("barrier");
    await until("the barrier", () => rc.bodies().includes("barrier"));
    assert.deepEqual(rc.bodies(), ["only once", "barrier"]);
  });
}

// A half-open connection (nothing comes through, nothing goes out, no
// close) is found out by the ack timeout while sending, and by the probe
// while idle: closed with 4000, reconnected, the frame written again.
// Before, the client stayed "connected" and the send rejected with timeout.
test("a half-open connection: the ack timeout and the idle probe reconnect", async () => {
  const s = await srv();
  const room = "js-halfopen";
  const dead = new Set();
  const hooks = {
    onSend: (ws) => !dead.has(ws),
    onMessage: (ws, f, deliver) => {
      if (!dead.has(ws)) deliver();
    },
  };
  const HalfOpen = faulty(named("hal"), hooks);
  // (ackTimeout 1 s: a live connection's ack comes well within it, even on
  // a busy machine.)
  const c = client(s.url, { room, WebSocket: HalfOpen, ackTimeout: 1000, probeInterval: 0 });
  const closes = [];
  c.on("disconnect", (d) => closes.push(d.code));
  await connected(c);
  dead.add(hooks.sockets.at(-1));
  const ack = await c.send("through a dead link");
  assert.deepEqual(closes, [4000]);
  assert.deepEqual((await history(s, room)).map((m) => [m.body, m.id]), [["through a dead link", ack.id]]);

  const hooks2 = { onMessage: hooks.onMessage, onSend: hooks.onSend };
  const Idle = faulty(named("ida"), hooks2);
  const idle = client(s.url, { room, WebSocket: Idle, ackTimeout: 1000, probeInterval: 100 });
  const connects = [];
  idle.on("connect", (i) => connects.push(i));
  const errors = [];
  idle.on("error", (e) => errors.push(e));
  await connected(idle);
  await sleep(500); // probes come and are answered (within 1 s): nothing happens
  assert.equal(connects.length, 1);
  assert.deepEqual(errors, [], "a probe's answer reached the listeners");
  dead.add(hooks2.sockets.at(-1));
  await until("the reconnect after an unanswered probe", () => connects.length === 2);
});

// The backoff grows to its cap while every connection ends right after its
// history frame (before, each history frame reset it), and starts again
// after a connection that lasted maxReconnectDelay. Math.random is pinned
// to draw the ceiling.
test("backoff: grows, caps, resets only after a lasting connection", async () => {
  const s = await srv();
  const random = Math.random;
  Math.random = () => 0.999999;
  try {
    let flaky = false;
    const hooks = {
      onMessage: (ws, f, deliver) => {
        deliver();
        if (flaky && f && f.type === "history") ws.close();
      },
    };
    const c = client(s.url, { room: "js-backoff", WebSocket: faulty(named("bo"), hooks), minReconnectDelay: 10, maxReconnectDelay: 80 });
    const delays = [];
    c.on("disconnect", (d) => delays.push(d.delay));
    let connects = 0;
    c.on("connect", () => connects++);
    await connected(c);
    flaky = true;
    hooks.sockets.at(-1).close();
    await until("six reconnects", () => delays.length >= 6);
    flaky = false;
    assert.deepEqual(delays.slice(0, 6), [9, 19, 39, 79, 79, 79]);
    // A connection that stays up for 200 ms (longer than maxReconnectDelay:
    // it counts as lasting); one that was still flaky ends meanwhile.
    for (;;) {
      await until("a connection", () => c.state === "connected");
      const m = delays.length;
      await sleep(200);
      if (c.state === "connected" && delays.length === m) break;
    }
    const n = delays.length;
    hooks.sockets.at(-1).close();
    await until("the next disconnect", () => delays.length > n);
    assert.equal(delays[n], 9);
  } finally {
    Math.random = random;
  }
});

// lastId (the next ?since=) follows what the server keeps: a member's
// message and an API post (client_id 0), not typing (a kind no history
// frame showed), a direct message or a system reply (/who); a delete of it
// moves it back. The reconnect then finds it: complete, no false gap.
test("lastId follows kept envelopes, API posts and deletes", async () => {
  const s = await srv();
  const room = "js-lastid";
  const a = client(s.url, { room, WebSocket: named("al") });
  const ra = recorder(a);
  const connects = [];
  a.on("connect", (i) => connects.push(i));
  const b = client(s.url, { room, WebSocket: named("bea") });
  await Promise.all([connected(a), connected(b)]);
  const first = await b.send("first");
  await until("bea's message", () => a.lastId === first.id);
  const posted = await (await api(s, room, "POST", "/messages", { username: "backend", body: "from the API" })).json();
  await until("the API post", () => ra.bodies().includes("from the API"));
  assert.equal(a.lastId, posted.id);
  await b.send({ type: "typing" });
  await b.send({ body: "psst", to: "al" });
  await a.send("/who");
  await until("the rest", () => ra.byType.typing.length === 1 && ra.bodies().includes("psst") && ra.byType.message.length >= 4);
  assert.equal(a.lastId, posted.id, "typing, a direct message or a system reply moved lastId");
  assert.equal((await api(s, room, "DELETE", "/messages/" + posted.id)).status, 204);
  await until("the delete", () => a.lastId !== posted.id);
  assert.equal(a.lastId, first.id);
  a._ws.close(); // a reconnect with ?since=first
  await until("the reconnect", () => connects.length === 2);
  assert.deepEqual(connects[1], { recovered: true, complete: true });
});

// The headers option goes into the handshake (Node's WebSocket and the ws
// package take headers): the seed's username cookie names the client.
test("headers reach the handshake", async () => {
  const s = await srv();
  const room = "js-headers";
  for (const [name, WebSocket] of [
    ["hank", WS],
    ["hugo", WSPackage],
  ]) {
    const c = client(s.url, { room, WebSocket, headers: { Cookie: "username=" + Buffer.from(name).toString("base64") } });
    const rc = recorder(c);
    await connected(c);
    await c.send("hi from " + name);
    await until("the message", () => rc.bodies().includes("hi from " + name));
    assert.equal(rc.byType.message.find((m) => m.body === "hi from " + name).username, name);
  }
});

test("a volatile send while half-open rejects, it is not resent", async () => {
  const s = await srv();
  const dead = new Set();
  const hooks = { onSend: (ws) => !dead.has(ws), onMessage: (ws, f, deliver) => !dead.has(ws) && deliver() };
  const c = client(s.url, { room: "js-volatile", WebSocket: faulty(named("vi"), hooks), ackTimeout: 200, probeInterval: 0 });
  await connected(c);
  dead.add(hooks.sockets.at(-1));
  await assert.rejects(c.send({ type: "typing" }, { volatile: true }), (e) => e instanceof ChatError && e.code === "not_connected");
});
