// Integration: the SDK against real `gifting serve` processes (one API, two gateways) on embedded
// Postgres and Redis in a temp data dir, started and stopped here. Skips, saying why, when the
// project's .venv is missing (run ../../dev once) or GIFTING_SDK_INTEGRATION=0.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { GiftingClient } from "../src/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const BIN = process.env.GIFTING_BIN || path.join(ROOT, ".venv/bin/gifting");
const skip = process.env.GIFTING_SDK_INTEGRATION === "0" ? "GIFTING_SDK_INTEGRATION=0"
  : !fs.existsSync(BIN) ? `no ${BIN}: run ./dev once to make the .venv` : false;

const WS = globalThis.WebSocket ?? (await import("ws").catch(() => null))?.WebSocket;

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => { const { port } = /** @type {any} */ (srv.address()); srv.close(() => resolve(port)); });
    srv.on("error", reject);
  });
}

async function waitHttp(url, proc, ms = 90000) {
  const end = Date.now() + ms;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${url}: process exited ${proc.exitCode}`);
    try { if ((await fetch(url)).ok) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`${url} not ready`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const procs = [];
process.on("exit", () => { for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL"); });
let dataDir;
const env = () => {
  const e = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("GIFTING_")));
  return { ...e, GIFTING_DATA_DIR: dataDir, GIFTING_WS_GIFT_RATE: "1000", GIFTING_WS_GIFT_BURST: "1000",
           GIFTING_BATCH_WINDOW_MS: "1", GIFTING_PRESENCE_INTERVAL: "0.25" };
};

async function serve(role) {
  const http = await freePort(), ws = await freePort();
  const log = fs.openSync(path.join(dataDir, `${role}-${http}.log`), "w");
  const proc = spawn(BIN, ["--log-format", "text", "serve", "--role", role, "--http-port", String(http),
                           "--ws-port", String(ws)], { env: env(), stdio: ["ignore", log, log] });
  procs.push(proc);
  await waitHttp(role === "gateway" ? `http://127.0.0.1:${ws}/healthz` : `http://127.0.0.1:${http}/readyz`, proc);
  return { proc, http: `http://127.0.0.1:${http}`, ws: `ws://127.0.0.1:${ws}`, alive: true };
}

function stop(proc, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve(undefined);
    proc.once("exit", () => resolve(undefined));
    proc.kill(signal);
  });
}

let api, gws;
async function token(user, role = "viewer") {
  const r = await fetch(`${api.http}/v1/dev/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user_id: user, role, name: user }) });
  const text = await r.text();
  assert.equal(r.status, 201, text);
  return JSON.parse(text).token;
}

/** A token of our own, short-lived, signed with the service's development secret. */
function shortToken(user, ttlSeconds) {
  const secret = fs.readFileSync(path.join(dataDir, "secrets", "jwt_secret"), "utf8").trim();
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, role: "viewer", name: user, iat: now, exp: now + ttlSeconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** A client for one user; rooms go to the first live gateway (as a load balancer would). */
async function clientFor(user, role = "viewer", extra = {}) {
  const t = await token(user, role);
  return new GiftingClient({ baseUrl: api.http, getToken: () => t, WebSocket: WS, ...extra });
}
const liveGateway = () => { const g = gws.find((x) => x.alive); assert.ok(g, "a gateway is up"); return g.ws; };

async function until(pred, ms = 30000, what = "condition") {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function funded(user) {
  const c = await clientFor(user);
  const { purchase: p, checkout } = await c.purchase("coins_700");
  assert.equal(p.status, "pending");
  assert.equal(checkout?.provider ?? "sandbox", "sandbox");
  assert.equal((await c.waitForPurchase(p.id)).status, "succeeded");
  return c;
}

describe("against a real gifting serve", { skip: skip || (!WS && "no WebSocket: npm install ws") }, () => {
  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "gifting-sdk-"));
    api = await serve("api"); // owns the embedded Postgres and Redis of dataDir
    gws = await Promise.all([serve("gateway"), serve("gateway")]);
  });
  after(async () => {
    await Promise.all(procs.map((p) => stop(p)));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a gateway killed mid-stream: viewer and sender resume on the other; no gift lost, doubled or charged twice", { timeout: 120000 }, async (t) => {
    const creator = await clientFor("sdk_cr1", "creator");
    const stream = await creator.createStream("sdk resume");
    const sender = await funded("sdk_s1");
    const catalog = await sender.gifts();
    const rose = catalog.find((g) => g.id === "rose");
    const before = (await sender.wallet()).coins;

    const ours = { wsUrl: liveGateway };
    const viewer = (await clientFor("sdk_v1")).room(stream.id, ours);
    const seen = [];
    viewer.on("gift", ({ gift }) => seen.push(gift.seq));
    const room = sender.room(stream.id, { ...ours, backoff: { baseMs: 50, capMs: 500 } });
    await viewer.connect();
    await room.connect();
    await Promise.all([viewer.ready(), room.ready()]);

    const N = 40;
    t.after(() => { viewer.close(); room.close(); });
    const acks = [];
    let welcomes = 0;
    viewer.on("welcome", () => welcomes++);
    for (let i = 0; i < N; i++) {
      const sent = room.sendGift("rose", 1);
      // mid-stream, with gift 16 on the wire and unanswered: no drain, no goodbye
      if (i === 15) { gws[0].alive = false; gws[0].proc.kill("SIGKILL"); }
      acks.push(await sent);
    }
    await until(() => viewer.state.seq === N, 30000, "the viewer has every gift");
    assert.equal(welcomes, 1, "the viewer came back once, on the other gateway");
    assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i + 1), "each seq once, in order");
    assert.equal(new Set(acks.map((a) => a.gift.id)).size, N, "every ack is its own gift");
    const after = (await sender.wallet()).coins;
    assert.equal(before - after, N * rose.coins, "charged exactly once per gift");
    const { gifts } = await sender.streamGifts(stream.id, 0, 1000);
    assert.equal(gifts.length, N);
    assert.equal(viewer.state.stream.coins_received, N * rose.coins);
    viewer.close();
    room.close();
  });

  test("an ack lost with the socket is replayed with the same key and charged once (WebSocket and HTTP)", { timeout: 60000 }, async (t) => {
    const creator = await clientFor("sdk_cr2", "creator");
    const stream = await creator.createStream("sdk lost ack");
    const keys = [];
    let dropped = 0;
    class DropAfterSend extends WS {
      send(data) {
        super.send(data);
        const m = JSON.parse(String(data));
        if (m.type === "send_gift") { keys.push(m.idempotency_key); if (dropped++ === 0) this.close(4000, "lost"); }
      }
    }
    const sender = await funded("sdk_s2");
    const before = (await sender.wallet()).coins;
    const room = sender.room(stream.id, { wsUrl: liveGateway, WebSocket: /** @type {any} */ (DropAfterSend),
                                          backoff: { baseMs: 50, capMs: 200 } });
    t.after(() => room.close());
    await room.connect();
    await room.ready();
    const res = await room.sendGift("heart", 2);
    assert.ok(keys.length >= 2 && new Set(keys).size === 1, `one key for every try: ${keys}`);
    const price = (await sender.gifts()).find((g) => g.id === "heart").coins * 2;
    assert.equal(res.balance, before - price);
    room.close();

    // over HTTP: the response is lost after the server committed; the retry replays it
    let lose = true;
    const bodies = [];
    const flaky = await clientFor("sdk_s2", "viewer", { backoff: { baseMs: 10, capMs: 50 }, fetch: async (url, init) => {
      const r = await fetch(url, init);
      if (init?.method === "POST") { bodies.push(JSON.parse(String(init.body))); if (lose) { lose = false; throw new TypeError("connection reset"); } }
      return r;
    } });
    const http = await flaky.sendGift(stream.id, "heart", 2);
    assert.equal(bodies.length, 2);
    assert.equal(bodies[0].idempotency_key, bodies[1].idempotency_key);
    assert.equal(http.balance, before - 2 * price);
    assert.equal((await sender.wallet()).coins, before - 2 * price, "two gifts, each charged once");
    const { gifts } = await sender.streamGifts(stream.id, 0, 100);
    assert.equal(gifts.length, 2);
  });

  test("a token about to expire is refreshed on the open socket with auth", { timeout: 60000 }, async (t) => {
    const creator = await clientFor("sdk_cr3", "creator");
    const stream = await creator.createStream("sdk auth");
    let minted = 0;
    const c = new GiftingClient({ baseUrl: api.http, getToken: () => { minted++; return shortToken("sdk_v3", 4); }, WebSocket: WS });
    const room = c.room(stream.id, { wsUrl: liveGateway, refreshBeforeMs: 2500 });
    t.after(() => room.close());
    const authed = new Promise((resolve) => room.on("authed", resolve));
    let welcomes = 0;
    room.on("welcome", () => welcomes++);
    await room.connect();
    await room.ready();
    const m = await authed;
    assert.ok(m.expires_at * 1000 > Date.now(), "the gateway took the fresh token");
    assert.equal(welcomes, 1, "no reconnect was needed");
    assert.ok(minted >= 2);
  });
});
