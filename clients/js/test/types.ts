// Type tests of chatserver.d.ts: `tsc --noEmit` (npm test) compiles this file.
// Each @ts-expect-error line must be an error, so a declaration that grows too
// loose fails the test as surely as one that is wrong.
import { connect, ChatError, Client, CLOSE_KICKED, type Ack, type Envelope, type Member, type State } from "../chatserver.js";

async function usage(): Promise<void> {
  const c: Client = connect("http://127.0.0.1:8000", { room: "lobby", token: () => Promise.resolve("jwt"), ackTimeout: 5000 });
  const off = c.on("message", (m: Envelope, meta) => {
    const b: string | undefined = m.body;
    const h: boolean = meta.fromHistory;
    void b, h;
  });
  off();
  c.on("history", (f) => f.messages.forEach((m) => m.id));
  c.on("ack", (a) => a.ref.toUpperCase());
  c.on("error", (e) => e.code + e.reason);
  c.on("delete", (d) => d.id);
  c.on("typing", (t) => t.username); // a custom kind
  c.on("disconnect", (d) => (d.reconnect ? d.delay : d.code));
  c.on("state", (s: State, old: State) => s === old);
  c.on("connect", (i) => i.recovered && i.complete);
  c.on("*", (f) => f.type);
  const ack: Ack = await c.send("hello");
  const id: string | undefined = ack.id;
  await c.send({ type: "typing" }, { volatile: true });
  await c.send({ body: "hi", to: "bob", data: { k: 1 }, ref: "r1" });
  try {
    await c.send("x");
  } catch (e) {
    if (e instanceof ChatError) e.code.toLowerCase();
  }
  const members: Member[] = await c.members();
  const n: number = members[0].client_id + c.pending + (c.clientId ?? 0) + CLOSE_KICKED;
  void id, n;
  c.close();

  // @ts-expect-error: a send takes no unknown field
  c.send({ body: "x", color: "red" });
  // @ts-expect-error: an ack listener gets an Ack, which has no body
  c.on("ack", (a) => a.body);
  // @ts-expect-error: the state is one of four strings
  const s: State = "open";
  // @ts-expect-error: room is a string
  connect("/", { room: 7 });
  void s;
}
void usage;
