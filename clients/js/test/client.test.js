// The JavaScript client against a real chatserver process, over real
// WebSockets (Node's WebSocket), in Node's test runner.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";

import * as chatserver from "../chatserver.js";
import { connect, ChatError } from "../chatserver.js";
import { Server, CutProxy, until, named, faulty, recorder, redisUp, redisAddr, dropRedisKeys, sleep, WS } from "./server.js";

// Fast reconnects keep the tests short; the backoff itself is the same code.
const quick = { minReconnectDelay: 20, maxReconnectDelay: 200 };

// The default pipelines with room for bursts (the default allows 5 a second).
const burstConfig = `pipelines:
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
`;

const servers = [];
const clients = [];
async function startServer(config) {
  const s = new Server(config);
  servers.push(s);
  return s.start();
}
function client(url, options) {
  const c = connect(url, Object.assign({ WebSocket: WS }, quick, options));
  clients.push(c);
  return c;
}
after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.close();
});

function connected(c) {
  return until(c.room + " connected", () => c.state === "connected");
}

let shared;
async function sharedServer() {
  shared ??= startServer(burstConfig);
  return shared;
}

test("messages, presence and members between two clients", async () => {
  const srv = await sharedServer();
  const room = "js-basic";
  const a = client(srv.url, { room, WebSocket: named("alice") });
  const ra = recorder(a);
  await connected(a);
  const b = client(srv.url + "/chatsocket", { room, WebSocket: named("bob") });
  const rb = recorder(b);
  await connected(b);
  await until("bob's online in A", () => ra.byType.online.some((e) => e.username === "bob"));

  await a.send("hello from alice");
  await until("the message in B", () => rb.bodies().includes("hello from alice"));
  const m = rb.byType.message.find((e) => e.body === "hello from alice");
  assert.equal(m.username, "alice");
  assert.equal(m.room, room);
  assert.equal(m.fromHistory, false);
  assert.match(m.html, /class="message"/);

  const members = await b.members();
  assert.deepEqual(members.map((x) => x.username).sort(), ["alice", "bob"]);

  // A third member gets it from the history frame, marked so.
  const c = client(srv.url, { room });
  const rc = recorder(c);
  const hist = [];
  c.on("history", (f) => hist.push(f));
  await connected(c);
  assert.equal(hist.length, 1);
  assert.deepEqual(rc.bodies(), ["hello from alice"]);
  assert.equal(rc.byType.message[0].fromHistory, true);

  b.close();
  await until("bob's offline in A", () => ra.byType.offline.some((e) => e.username === "bob"));
  assert.equal(b.state, "closed");
});

test("a cut connection recovers with ?since=: what it missed, each message once", async () => {
  const srv = await sharedServer();
  const proxy = await new CutProxy(srv.port).listen();
  after(() => proxy.close());
  const room = "js-recover";
  const a = client(srv.url, { room, WebSocket: named("alice") });
  const b = client(proxy.url, { room, WebSocket: named("bob") });
  const rb = recorder(b);
  const connects = [];
  b.on("connect", (i) => connects.push(i));
  const disconnects = [];
  b.on("disconnect", (d) => disconnects.push(d));
  await connected(a);
  await connected(b);
  await a.send("before");
  await until("'before' in B", () => rb.bodies().includes("before"));

  proxy.cut();
  await until("B to notice the cut", () => b.state !== "connected");
  for (const body of ["missed 1", "missed 2", "missed 3"]) await a.send(body);
  proxy.resume();
  await until("B's second connect", () => connects.length === 2);
  await until("what B missed", () => rb.bodies().length === 4);
  assert.deepEqual(rb.bodies(), ["before", "missed 1", "missed 2", "missed 3"]);
  assert.deepEqual(connects, [
    { recovered: false, complete: true },
    { recovered: true, complete: true },
  ]);
  assert.deepEqual(
    rb.byType.message.map((m) => m.fromHistory),
    [false, true, true, true],
  );
  assert.ok(disconnects.length >= 1 && disconnects[0].reconnect, "a disconnect event that reconnects");
  // Live again: nothing doubled after the recovery either.
  await a.send("after");
  await until("'after' in B", () => rb.bodies().includes("after"));
  assert.deepEqual(rb.bodies(), ["before", "missed 1", "missed 2", "missed 3", "after"]);
});

test("send resolves with the server's ack and rejects with its error code", async () => {
  const srv = await sharedServer();
  const room = "js-ack";
  const a = client(srv.url, { room, WebSocket: named("alice") });
  const ra = recorder(a);
  await connected(a);

  const ack = await a.send({ body: "acked", ref: "my-ref-1" });
  assert.equal(ack.type, "ack");
  assert.equal(ack.ref, "my-ref-1");
  await until("the acked message", () => ra.byType.message.some((m) => m.id === ack.id));
  assert.equal(ra.byType.message.find((m) => m.id === ack.id).body, "acked");
  await until("A's client id", () => a.clientId !== null);
  assert.equal(a.clientId, ra.byType.message.find((m) => m.id === ack.id).client_id);

  // The same ref again: acked with the first id, not delivered again.
  const again = await a.send({ body: "acked", ref: "my-ref-1" });
  assert.equal(again.id, ack.id);

  // Errors reject with a ChatError carrying the code and the ref.
  await assert.rejects(a.send("   "), (e) => e instanceof ChatError && e.code === "empty" && typeof e.ref === "string");
  await assert.rejects(a.send({ type: "no_such_kind", body: "x" }), (e) => e instanceof ChatError && e.code === "unknown_type");
  await assert.rejects(a.send({ body: "x", colour: "red" }), (e) => e instanceof ChatError && e.code === "invalid_json");
  await assert.rejects(a.send("x".repeat(9000)), (e) => e instanceof ChatError && e.code === "too_big");
  // A reply that publishes nothing is acked without an id.
  const who = await a.send("/who");
  assert.equal(who.id, undefined);
  assert.equal(a.pending, 0);
  const acked = ra.all.filter((f) => f.type === "message" && f.body === "acked");
  assert.equal(acked.length, 1, "the resent ref was delivered once");
});

test("custom kinds, data and direct messages reach their listeners", async () => {
  const srv = await sharedServer();
  const room = "js-kinds";
  const a = client(srv.url, { room, WebSocket: named("alice") });
  const b = client(srv.url, { room, WebSocket: named("bob") });
  const c = client(srv.url, { room, WebSocket: named("carol") });
  const [rb, rc] = [recorder(b), recorder(c)];
  await Promise.all([connected(a), connected(b), connected(c)]);
  await until("3 members", async () => (await a.members()).length === 3);

  const t = await a.send({ type: "typing" }, { volatile: true });
  assert.equal(typeof t.id, "string");
  await until("typing in B", () => rb.byType.typing.length === 1);
  assert.equal(rb.byType.typing[0].username, "alice");
  assert.equal(rb.byType.typing[0].body, undefined);

  await a.send({ body: "with data", data: { n: 1, tags: ["x"] } });
  await until("the data in B", () => rb.bodies().includes("with data"));
  assert.deepEqual(rb.byType.message.find((m) => m.body === "with data").data, { n: 1, tags: ["x"] });

  await a.send({ body: "psst", to: "bob" });
  await until("the direct message in B", () => rb.bodies().includes("psst"));
  assert.equal(rb.byType.message.find((m) => m.body === "psst").to, "bob");
  await a.send("public after");
  await until("the public message in C", () => rc.bodies().includes("public after"));
  assert.ok(!rc.bodies().includes("psst"), "carol got the direct message to bob");
  await assert.rejects(a.send({ body: "hello?", to: "nobody" }), (e) => e.code === "no_recipient");
});

test("a server restart in the middle of sending: every message exactly once", async (t) => {
  if (!(await redisUp())) {
    if (!process.env.CI) {
      t.skip(`no Redis at ${redisAddr} (the restart keeps history and refs there); in CI this test fails instead`);
      return;
    }
    assert.fail(`no Redis at ${redisAddr} and CI is set`);
  }
  const prefix = "chatserver-jstest:" + randomUUID().slice(0, 8) + ":";
  const srv = await startServer(
    burstConfig +
      `history: { store: redis, size: 500 }
redis: { url: "redis://${redisAddr}/0", key_prefix: "${prefix}" }
broker: { type: redis }
`,
  );
  t.after(async () => {
    await srv.stop(); // its history writer is done with the keys
    await dropRedisKeys(prefix);
  });
  const room = "js-restart";
  // Alice's sockets count how often each ref was written: a frame cut off
  // before its ack is written again after the restart.
  const written = new Map();
  const Counting = class extends named("alice") {
    send(text) {
      const ref = JSON.parse(text).ref;
      written.set(ref, (written.get(ref) || 0) + 1);
      super.send(text);
    }
  };
  const a = client(srv.url, { room, WebSocket: Counting });
  const b = client(srv.url, { room, WebSocket: named("bob") });
  const [ra, rb] = [recorder(a), recorder(b)];
  const connects = { a: [], b: [] };
  a.on("connect", (i) => connects.a.push(i));
  b.on("connect", (i) => connects.b.push(i));
  await Promise.all([connected(a), connected(b)]);

  const N = 60;
  const want = Array.from({ length: N }, (_, i) => "m" + i);
  const sends = [];
  let restarted;
  for (let i = 0; i < N; i++) {
    sends.push(a.send(want[i]));
    if (i === 20) restarted = srv.restart(); // SIGTERM, then a new process on the same port
    if (i === 40) await restarted;
    await sleep(2); // spread the sends over the restart
  }
  const exit = await restarted;
  assert.equal(exit.code, 0, "the old server exits 0 on SIGTERM");
  const acks = await Promise.all(sends);
  const ids = acks.map((k) => k.id);
  assert.equal(new Set(ids).size, N, "every message has its own id");
  await a.send("barrier");

  for (const [name, rec] of [
    ["alice", ra],
    ["bob", rb],
  ]) {
    await until(name + " to have every message", () => rec.byType.message.length >= N);
    // A duplicate would come before a message sent after everything: wait
    // for that one before comparing (until(length >= N) alone would miss a
    // late duplicate).
    await until(name + " to have the barrier", () => rec.bodies().includes("barrier"));
    assert.deepEqual(rec.bodies().slice(0, -1), want, name + " got every message exactly once, in order");
    assert.deepEqual(
      rec.byType.message.map((m) => m.id).slice(0, -1),
      ids,
      name + "'s ids are the acked ones",
    );
  }
  for (const [name, cs] of Object.entries(connects)) {
    assert.ok(cs.length >= 2 && cs.at(-1).recovered && cs.at(-1).complete, name + " recovered after the restart: " + JSON.stringify(cs));
  }
  const resent = [...written.values()].filter((n) => n > 1).length;
  t.diagnostic(`${resent} of ${N} frames were written again after the restart`);
  const hist = await (await fetch(srv.url + "/api/rooms/" + room + "/history?limit=" + (N + 1))).json();
  assert.deepEqual(
    hist.map((m) => m.body),
    [...want, "barrier"],
    "the history holds every message once",
  );
});

test("jwt mode: the token goes in the handshake's query parameter, and an expired one is renewed or final", async () => {
  const key = "k".repeat(32);
  const srv = await startServer(`pipelines:
  join:
    - use: username
      with: { mode: jwt, jwt_key: "${key}" }
    - use: broadcast
  message:
    - use: username
      with: { mode: jwt, jwt_key: "${key}" }
    - use: validate
    - use: history
    - use: broadcast
`);
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const token = (name, ttl) => {
    const now = Math.floor(Date.now() / 1000);
    const unsigned = b64({ alg: "HS256", typ: "JWT" }) + "." + b64({ name, iat: now, exp: now + ttl });
    return unsigned + "." + createHmac("sha256", key).update(unsigned).digest("base64url");
  };
  const jwt = token("carol", 3600);
  let calls = 0;
  const c = client(srv.url, {
    room: "js-jwt",
    token: async () => {
      calls++;
      return jwt;
    },
  });
  const rc = recorder(c);
  await connected(c);
  assert.equal(calls, 1);
  await c.send("signed in");
  await until("the message", () => rc.bodies().includes("signed in"));
  assert.equal(rc.byType.message[0].username, "carol");
  // The room admits proven members only, and so does its members list.
  assert.deepEqual((await c.members()).map((m) => m.username), ["carol"]);
  assert.equal(calls, 2, "members() asked the token function too");

  // Without a token the join is refused, for good: the same handshake
  // would be refused again. A pending send rejects.
  const anon = client(srv.url, { room: "js-jwt" });
  const closes = [];
  anon.on("disconnect", (d) => closes.push(d));
  const anonSend = anon.send("never").catch((e) => e);
  // (The server sends error rejected, then closes with 1008, and closes the
  // socket only once the client answered: the code arrives as sent.)
  await until("the refusal", () => anon.state === "closed");
  assert.equal(closes.length, 1, JSON.stringify(closes));
  assert.equal(closes[0].code, 1008, "close code " + closes[0].code);
  assert.equal(closes[0].reconnect, false);
  assert.match(closes[0].reason, /^join refused: /);
  const refusedSend = await anonSend;
  assert.ok(refusedSend instanceof ChatError && refusedSend.code === "closed", String(refusedSend));
  await assert.rejects(anon.members(), (e) => e instanceof ChatError && e.code === "http_401");
  // A token function may have a better token next time: it is asked
  // maxRefusals (3) times in a row, then the client stops.
  let bad = 0;
  const revoked = client(srv.url, { room: "js-jwt", token: () => (++bad, "revoked") });
  await until("the refusals", () => revoked.state === "closed");
  assert.equal(bad, 3);

  // A token that expires while connected: the server closes with 4002. A
  // fixed token cannot be renewed, so that client stops for good; a token
  // function is asked again and the client reconnects.
  // (Tokens of 3 s: exp is in whole seconds, so they last 2 to 3 s; the
  // waits are until()'s 20 s.)
  const fixed = client(srv.url, { room: "js-jwt", token: token("dave", 3) });
  const fixedCloses = [];
  fixed.on("disconnect", (d) => fixedCloses.push(d));
  let renewals = 0;
  const renewing = client(srv.url, {
    room: "js-jwt",
    token: () => token("erin", ++renewals === 1 ? 3 : 3600),
  });
  const renewed = [];
  renewing.on("connect", (i) => renewed.push(i));
  await connected(fixed);
  await until("the fixed token to expire", () => fixed.state === "closed");
  assert.deepEqual(fixedCloses, [{ code: 4002, reason: "token expired", reconnect: false }]);
  await assert.rejects(fixed.send("after expiry"), (e) => e.code === "closed");
  await until("the renewed token's connection", () => renewed.length === 2);
  assert.equal(renewals, 2);
  await renewing.send("renewed");
  await until("erin's message", () => rc.bodies().includes("renewed"));
  assert.equal(rc.byType.message.find((m) => m.body === "renewed").username, "erin");
});

test("the server API: a posted message, a delete, and a kick (4001) that ends the client", async () => {
  const key = "a".repeat(40);
  const srv = await startServer(burstConfig + `api: { keys: ["${key}"] }\n`);
  const room = "js-api";
  const api = (method, path, body) =>
    fetch(srv.url + "/api/rooms/" + room + path, {
      method,
      headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
      body: body && JSON.stringify(body),
    });
  // Node's own WebSocket: it reported 1006 instead of 4001 when the server
  // closed TCP right after its close frame with a frame of the client's in
  // flight; the server now waits for the answer. Once `hold` is set, the
  // socket swallows alice's writes: her send stays pending until the kick.
  let hold = false;
  const Holding = faulty(named("alice"), { onSend: () => !hold });
  const a = client(srv.url, { room, WebSocket: Holding });
  const ra = recorder(a);
  const deletes = [];
  a.on("delete", (d) => deletes.push(d));
  const disconnects = [];
  a.on("disconnect", (d) => disconnects.push(d));
  await connected(a);

  const posted = await api("POST", "/messages", { username: "backend", body: "from the API" });
  assert.equal(posted.status, 201);
  const env = await posted.json();
  await until("the posted message", () => ra.byType.message.some((m) => m.id === env.id));
  assert.equal((await api("DELETE", "/messages/" + env.id)).status, 204);
  await until("the delete frame", () => deletes.length === 1);
  assert.deepEqual(deletes[0], { type: "delete", room, id: env.id });

  hold = true;
  const pending = a.send("never written").catch((e) => e);
  assert.equal(a.pending, 1);
  assert.equal((await (await api("POST", "/kick", { username: "alice" })).json()).kicked, 1);
  await until("the kick", () => a.state === "closed").catch((e) => {
    throw new Error(e.message + ": disconnects " + JSON.stringify(disconnects));
  });
  assert.deepEqual(disconnects.at(-1), { code: 4001, reason: "kicked", reconnect: false });
  const rejected = await pending;
  assert.ok(rejected instanceof ChatError && rejected.code === "closed" && rejected.reason === "kicked", String(rejected));
  await assert.rejects(a.send("still here?"), (e) => e.code === "closed");
});

test("close: pending sends reject with closed, and no reconnect follows", async () => {
  const srv = await sharedServer();
  let sockets = 0;
  const Counting = class extends named("dave") {
    constructor(url) {
      super(url);
      sockets++;
    }
  };
  const c = client(srv.url, { room: "js-close", WebSocket: Counting });
  await connected(c);
  const states = [];
  c.on("state", (s) => states.push(s));
  c.close();
  assert.equal(c.state, "closed");
  await assert.rejects(c.send("too late"), (e) => e.code === "closed");
  assert.deepEqual(states, ["closed"]);

  const d = client("http://127.0.0.1:1", { room: "js-close", WebSocket: Counting }); // nothing listens there
  const p = d.send("never");
  await until("a reconnect attempt", () => sockets >= 3);
  d.close();
  await assert.rejects(p, (e) => e instanceof ChatError && e.code === "closed");
  const n = sockets;
  await sleep(500); // 2.5× the backoff cap: a reconnect would have happened
  assert.equal(sockets, n, "a closed client reconnected");
});

test("the module's exports are the ones chatserver.d.ts declares", () => {
  const dts = readFileSync(new URL("../chatserver.d.ts", import.meta.url), "utf8");
  const declared = [...dts.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(Object.keys(chatserver).sort(), declared);
  assert.ok(declared.length >= 6);
});
