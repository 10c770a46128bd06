// Test helpers: a real chatserver process (built from this repository, or
// $CHATSERVER_BIN), a TCP proxy that can cut every connection, and waiting.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, existsSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..", "..");

let built = "";

// binary returns the chatserver binary: $CHATSERVER_BIN (make test builds it
// once), else one built here with go build (cached by Go between runs).
export function binary() {
  if (process.env.CHATSERVER_BIN) return path.resolve(repoRoot, process.env.CHATSERVER_BIN);
  if (built) return built;
  const dir = mkdtempSync(path.join(os.tmpdir(), "chatserver-jstest-bin-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  built = path.join(dir, "chatserver");
  execFileSync("go", ["build", "-o", built, "./cmd/chatserver"], { cwd: repoRoot, stdio: "inherit" });
  return built;
}

// freePort asks the kernel for a free loopback port.
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// redisURL is the Redis the restart test keeps history and refs in.
export const redisAddr = process.env.CHATSERVER_TEST_REDIS || "127.0.0.1:6379";

// redisUp reports whether Redis answers PING.
export function redisUp() {
  const [host, port] = redisAddr.split(":");
  return new Promise((resolve) => {
    const s = net.connect({ host, port: Number(port) });
    s.setTimeout(1000);
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => {
      s.destroy();
      resolve(d.toString().startsWith("+PONG"));
    });
    s.on("error", () => resolve(false));
    s.on("timeout", () => {
      s.destroy();
      resolve(false);
    });
  });
}

// redisCommand sends one command to Redis and returns its reply: a string,
// a number, or an array of them (enough for KEYS and DEL).
export function redisCommand(...args) {
  const [host, port] = redisAddr.split(":");
  const req = "*" + args.length + "\r\n" + args.map((a) => "$" + Buffer.byteLength(a) + "\r\n" + a + "\r\n").join("");
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port: Number(port) });
    let buf = "";
    s.on("connect", () => s.write(req));
    s.on("error", reject);
    s.on("data", (d) => {
      buf += d.toString();
      const r = parseRESP(buf, 0);
      if (r) {
        s.destroy();
        if (r.value instanceof Error) reject(r.value);
        else resolve(r.value);
      }
    });
  });
}

// parseRESP parses one reply at i, or returns null when buf holds less.
function parseRESP(buf, i) {
  const eol = buf.indexOf("\r\n", i);
  if (eol < 0) return null;
  const line = buf.slice(i + 1, eol);
  switch (buf[i]) {
    case "+":
      return { value: line, next: eol + 2 };
    case "-":
      return { value: new Error(line), next: eol + 2 };
    case ":":
      return { value: Number(line), next: eol + 2 };
    case "$": {
      const n = Number(line);
      if (n < 0) return { value: null, next: eol + 2 };
      if (Buffer.byteLength(buf.slice(eol + 2)) < n + 2) return null;
      return { value: buf.slice(eol + 2, eol + 2 + n), next: eol + 4 + n };
    }
    case "*": {
      const out = [];
      let next = eol + 2;
      for (let k = 0; k < Number(line); k++) {
        const r = parseRESP(buf, next);
        if (!r) return null;
        out.push(r.value);
        next = r.next;
      }
      return { value: out, next };
    }
  }
  throw new Error("unexpected Redis reply: " + JSON.stringify(buf));
}

// dropRedisKeys deletes every key under prefix (a test's own namespace).
export async function dropRedisKeys(prefix) {
  const keys = await redisCommand("KEYS", prefix.replace(/[*?[\]\\]/g, "\\$&") + "*");
  if (keys.length) await redisCommand("DEL", ...keys);
  return keys.length;
}

// Server is one chatserver process on a loopback port, with a config file of
// its own (config: YAML added to server.addr). restart() stops it (SIGTERM,
// as an operator would) and starts it again on the same port.
export class Server {
  constructor(config) {
    this.config = config || "";
    this.dir = mkdtempSync(path.join(os.tmpdir(), "chatserver-jstest-"));
    this.log = "";
    this.proc = null;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    this.url = "http://127.0.0.1:" + this.port;
    const file = path.join(this.dir, "chatserver.yaml");
    writeFileSync(file, `server:\n  addr: "127.0.0.1:${this.port}"\n  shutdown_timeout: 5s\n` + this.config);
    const proc = spawn(binary(), ["serve", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
    const keep = (d) => {
      this.log += d.toString();
    };
    proc.stdout.on("data", keep);
    proc.stderr.on("data", keep);
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        const r = await fetch(this.url + "/readyz");
        if (r.status === 200) return this;
      } catch (e) {
        // not listening yet
      }
      if (proc.exitCode !== null || Date.now() > deadline) {
        throw new Error("chatserver did not become ready; its log:\n" + this.log);
      }
      await sleep(50);
    }
  }

  async stop() {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
    const { code, signal } = await proc.exited;
    return { code, signal };
  }

  async restart() {
    const exit = await this.stop();
    await this.start();
    return exit;
  }

  async close() {
    await this.stop();
    if (existsSync(this.dir)) rmSync(this.dir, { recursive: true, force: true });
  }
}

// CutProxy forwards TCP connections to target until cut(), which closes
// them all and refuses new ones until resume().
export class CutProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.socks = new Set();
    this.isCut = false;
    this.server = net.createServer((c) => {
      if (this.isCut) {
        c.destroy();
        return;
      }
      const up = net.connect({ host: "127.0.0.1", port: this.targetPort });
      for (const s of [c, up]) {
        this.socks.add(s);
        s.on("close", () => this.socks.delete(s));
        s.on("error", () => {});
      }
      c.pipe(up);
      up.pipe(c);
      c.on("close", () => up.destroy());
      up.on("close", () => c.destroy());
    });
  }

  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => {
        this.url = "http://127.0.0.1:" + this.server.address().port;
        resolve(this);
      });
    });
  }

  cut() {
    this.isCut = true;
    for (const s of this.socks) s.destroy();
  }

  resume() {
    this.isCut = false;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// until polls cond every 20 ms and fails after 20 s, saying what it waited for.
export async function until(what, cond) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(20);
  }
}

// WS is the WebSocket class of the tests: Node's own where it has one, else
// the ws package's (Node 18), which takes headers as its third argument.
export const nativeWebSocket = typeof globalThis.WebSocket === "function";
const wsPackage = await import("ws");
export const WS = nativeWebSocket ? globalThis.WebSocket : wsPackage.WebSocket;
export const WSPackage = wsPackage.WebSocket;

// faulty returns a subclass of the WebSocket class Base whose frames pass
// through hooks: onMessage(socket, frame, deliver) decides whether and when
// the client sees a received frame (deliver() hands it over; without a hook
// every frame goes through), onSend(socket, text) returns false to swallow a
// write. Every socket made is pushed to hooks.sockets.
export function faulty(Base, hooks) {
  hooks.sockets ??= [];
  return class extends Base {
    constructor(...args) {
      super(...args);
      hooks.sockets.push(this);
    }
    set onmessage(fn) {
      super.onmessage = (ev) => {
        let f = null;
        try {
          f = JSON.parse(ev.data);
        } catch (e) {
          // not JSON: deliver as is
        }
        if (hooks.onMessage) hooks.onMessage(this, f, () => fn(ev));
        else fn(ev);
      };
    }
    get onmessage() {
      return super.onmessage;
    }
    send(text) {
      if (hooks.onSend && hooks.onSend(this, text) === false) return;
      super.send(text);
    }
  };
}

// named returns a WebSocket class whose handshakes carry the seed's username
// cookie (base64 of the name), as the page's do: the name is the
// connection's own from the join on, on every connection.
// With {ws: true} it is the ws package's class whatever this Node has.
export function named(name, { ws = false } = {}) {
  const cookie = "username=" + Buffer.from(name).toString("base64");
  if (ws || !nativeWebSocket) {
    return class extends wsPackage.WebSocket {
      constructor(url) {
        super(url, [], { headers: { Cookie: cookie } });
      }
    };
  }
  return class extends WS {
    constructor(url) {
      super(url, { headers: { Cookie: cookie } });
    }
  };
}

// recorder keeps every envelope a client dispatches, by type.
export function recorder(client) {
  const rec = { all: [], byType: {} };
  client.on("*", (f) => {
    rec.all.push(f);
  });
  for (const t of ["message", "online", "offline", "typing"]) {
    rec.byType[t] = [];
    client.on(t, (env, meta) => rec.byType[t].push(Object.assign({ fromHistory: meta.fromHistory }, env)));
  }
  rec.bodies = () => rec.byType.message.map((m) => m.body);
  return rec;
}
