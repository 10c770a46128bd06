// npm test's runner: Node's test runner over test/*.test.js, with Node's own
// WebSocket where this Node has one (Node 22+, or 20 with
// --experimental-websocket); on an older Node the tests use the ws package.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const dir = path.dirname(fileURLToPath(import.meta.url));
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".test.js"))
  .map((f) => path.join(dir, f));
const flags = [];
if (typeof WebSocket === "undefined" && process.allowedNodeEnvironmentFlags.has("--experimental-websocket")) {
  flags.push("--experimental-websocket");
}
const r = spawnSync(process.execPath, [...flags, "--test", ...process.argv.slice(2), ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
