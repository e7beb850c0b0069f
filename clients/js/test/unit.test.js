// Unit tests of the SDK's decisions, with a scripted fake socket and a fake fetch (no server).
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import {
  GiftingClient, GiftingError, HttpClient, InsufficientFundsError, OutcomeUnknownError, Room, SpendingLimitError,
  UnknownCodeError, backoffDelay, createRoomState, errorFor, foldGift, foldState, foldWelcome, tokenExpiry,
} from "../src/index.js";

/** A scripted socket: the test plays the server. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
    queueMicrotask(() => { this.readyState = 1; this.onopen && this.onopen({}); });
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000, reason = "") { this.drop(code, reason); }
  // server side
  push(msg) { this.onmessage({ data: JSON.stringify(msg) }); }
  drop(code = 1006, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose({ code, reason });
  }
  static last() { return FakeSocket.all[FakeSocket.all.length - 1]; }
}

const tick = () => new Promise((r) => setTimeout(r, 0));
async function until(pred, ms = 2000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met");
    await new Promise((r) => setTimeout(r, 2));
  }
}

const stream = { id: "7", creator_id: "cr", title: "t", status: "live", started_at: "2026-01-01T00:00:00Z",
                 ended_at: null, viewers: 1, coins_received: 100 };
const welcome = (seq, recovered = null, extra = {}) =>
  ({ type: "welcome", stream: { ...stream }, user: { id: "u", role: "viewer" }, seq, viewers: 3, recovered, ...extra });
const gift = (seq, extra = {}) => ({
  id: "g" + seq, stream_id: "7", seq, sender: { id: "s", name: "S" }, gift: { id: "rose", name: "Rose", coins: 1 },
  count: 1, coins: 1, created_at: new Date().toISOString(), ...extra,
});
const giftMsg = (seq, extra) => ({ type: "gift", seq, gift: gift(seq, extra) });

function jwt(expSeconds) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256" })}.${b64({ sub: "u", exp: expSeconds })}.sig`;
}

/** A fake HTTP API: a list of handlers by "METHOD path-prefix". */
function fakeFetch(routes, calls = []) {
  return async (url, init) => {
    const path = url.replace(/^https?:\/\/[^/]+/, "");
    calls.push({ method: init.method, path, body: init.body ? JSON.parse(init.body) : undefined });
    for (const [k, fn] of Object.entries(routes)) {
      const [m, prefix] = k.split(" ");
      if (m === init.method && path.startsWith(prefix)) {
        const [status, doc] = await fn(path, init.body ? JSON.parse(init.body) : undefined);
        return new Response(JSON.stringify(doc), { status, headers: { "Content-Type": "application/json" } });
      }
    }
    return new Response(JSON.stringify({ error: { code: "not_found", message: "no" } }), { status: 404 });
  };
}

function makeRoom(extra = {}) {
  const calls = [];
  const http = new HttpClient({ baseUrl: "http://api", getToken: () => "tok", fetch: fakeFetch(extra.routes ?? {}, calls),
                                backoff: { baseMs: 1, capMs: 2 } });
  const room = new Room({ streamId: "7", wsUrl: "ws://gw", getToken: extra.getToken ?? (() => "tok"),
                          WebSocket: FakeSocket, http, backoff: { baseMs: 1, capMs: 5 }, ...extra.options });
  room.calls = calls;
  return room;
}

beforeEach(() => { FakeSocket.all = []; });
let rooms = [];
afterEach(() => { for (const r of rooms) r.close(); rooms = []; });
const track = (r) => { rooms.push(r); return r; };

describe("backoff", () => {
  test("full jitter spreads a reconnect storm over [0, min(cap, base*2^n)]", () => {
    assert.equal(backoffDelay(0, { baseMs: 500, random: () => 1 }), 500);
    assert.equal(backoffDelay(3, { baseMs: 500, random: () => 1 }), 4000);
    assert.equal(backoffDelay(20, { baseMs: 500, capMs: 30000, random: () => 1 }), 30000);
    assert.equal(backoffDelay(20, { random: () => 0 }), 0);
    const delays = Array.from({ length: 1000 }, () => backoffDelay(4, { baseMs: 500 }));
    const buckets = [0, 0, 0, 0];
    for (const d of delays) buckets[Math.min(3, Math.floor(d / 2000))]++;
    assert.ok(buckets.every((b) => b > 150), `spread ${buckets}`);
  });
});

describe("errors", () => {
  test("each contract code has its class, with status and details", () => {
    const e = errorFor("spending_limit", "over", { status: 403, details: { limit: "daily", remaining_coins: 5 } });
    assert.ok(e instanceof SpendingLimitError && e instanceof GiftingError);
    assert.equal(e.name, "SpendingLimitError");
    assert.equal(e.status, 403);
    assert.deepEqual(e.details, { limit: "daily", remaining_coins: 5 });
    assert.ok(errorFor("insufficient_funds", "x") instanceof InsufficientFundsError);
    const u = errorFor("brand_new_code", "x");
    assert.ok(u instanceof UnknownCodeError && u.code === "brand_new_code");
  });

  test("tokenExpiry reads exp, and null from garbage", () => {
    assert.equal(tokenExpiry(jwt(1700000000)), 1700000000000);
    assert.equal(tokenExpiry("nope"), null);
  });
});

describe("state fold", () => {
  test("a new gift adds coins, goal progress, battle score, a pin and a combo; a repeat or a gap folds nothing", () => {
    const s = createRoomState("7");
    const ch = new Set();
    const goal = { id: "goal1", stream_id: "7", title: "g", target_coins: 10, gift_id: null, progress_coins: 4,
                   status: "active", created_at: "x", reached_at: null };
    const battle = { id: "b1", status: "live", duration_s: 60, created_at: "x", starts_at: "x", ends_at: "y",
                     sides: [{ creator_id: "cr", stream_id: "7", score: 0, top: [] },
                             { creator_id: "o", stream_id: "8", score: 5, top: [] }],
                     winner_creator_id: null, ended_reason: null };
    foldWelcome(s, welcome(10, null, { goal, battle, pinned: [] }), ch);
    s.seq = 10;
    assert.equal(foldGift(s, gift(9), ch, Date.now()), "dup");
    assert.equal(foldGift(s, gift(12), ch, Date.now()), "gap");
    const later = new Date(Date.now() + 60000).toISOString();
    assert.equal(foldGift(s, gift(11, { coins: 6, goal: { id: "goal1", progress_coins: 10, target_coins: 10, reached: true },
                                        battle: { id: "b1", score: 6 }, message: "hi", pinned_until: later,
                                        combo: { id: "g11", count: 1 } }), ch, Date.now()), "ok");
    assert.equal(s.stream.coins_received, 106);
    assert.equal(s.goal.progress_coins, 10);
    assert.equal(s.goal.status, "reached");
    assert.equal(s.battle.sides[0].score, 6);
    assert.equal(s.battle.sides[1].score, 5);
    assert.equal(s.pinned.length, 1);
    assert.equal(s.combos.get("g11").count, 1);
    foldGift(s, gift(12, { combo: { id: "g11", count: 2 } }), ch, Date.now());
    assert.equal(s.combos.get("g11").count, 2);
    foldState(s, { type: "message_hidden", gift_id: "g11", seq: 11 }, ch);
    assert.equal(s.pinned.length, 0);
    foldState(s, { type: "viewers", count: 9 }, ch);
    foldState(s, { type: "leaderboard", top: [{ user_id: "s", name: "S", coins: 7 }] }, ch);
    foldState(s, { type: "goal", goal: null }, ch);
    foldState(s, { type: "stream", stream: { ...stream, coins_received: 50, gifts_paused: true } }, ch);
    assert.equal(s.viewers, 9);
    assert.equal(s.goal, null);
    assert.equal(s.stream.gifts_paused, true);
    assert.equal(s.stream.coins_received, 107, "a stale stream message never takes coins back");
    for (const k of ["stream", "seq", "viewers", "goal", "battle", "pinned", "combos", "leaderboard"]) assert.ok(ch.has(k), k);
  });
});

describe("room", () => {
  test("joins, dedupes by seq, and resumes with since after a drop", async () => {
    const room = track(makeRoom());
    const seen = [];
    room.on("gift", ({ gift: g }) => seen.push(g.seq));
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    const ws = FakeSocket.last();
    assert.ok(!ws.url.includes("since"));
    ws.push(welcome(5));
    ws.push([giftMsg(6), giftMsg(7), giftMsg(7)]);
    ws.drop(1006);
    await until(() => FakeSocket.all.length === 2);
    const ws2 = FakeSocket.last();
    assert.match(ws2.url, /since=7$/);
    ws2.push(welcome(8, true));
    ws2.push([giftMsg(6), giftMsg(7), giftMsg(8), giftMsg(9)]);
    assert.deepEqual(seen, [6, 7, 8, 9]);
    assert.equal(room.state.seq, 9);
    assert.equal(room.state.stream.coins_received, 104, "every gift not seen before adds its coins, once");
  });

  test("recovered false reloads the missed gifts over HTTP, holding live ones until done", async () => {
    const room = track(makeRoom({ routes: {
      "GET /v1/streams/7/gifts": async (path) => {
        const after = Number(new URL("http://x" + path).searchParams.get("after_seq"));
        return [200, { gifts: [after + 1, after + 2, after + 3].filter((n) => n <= 20).map((n) => gift(n)),
                       next_after_seq: null }];
      } } }));
    const seen = [];
    const gaps = [];
    room.on("gift", ({ gift: g }) => seen.push(g.seq));
    room.on("gap", (g) => gaps.push(g));
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    FakeSocket.last().push(welcome(2));
    FakeSocket.last().drop(4408);
    await until(() => FakeSocket.all.length === 2);
    const ws = FakeSocket.last();
    ws.push([welcome(8, false), giftMsg(9)]);
    await until(() => seen.length === 7);
    assert.deepEqual(seen, [3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(gaps, [{ from: 2, to: 8, recovered: false, skipped: 0 }]);
  });

  test("a gap in the live stream is filled over HTTP", async () => {
    const room = track(makeRoom({ routes: { "GET /v1/streams/7/gifts": async () => [200, { gifts: [gift(3), gift(4)], next_after_seq: null }] } }));
    const seen = [];
    room.on("gift", ({ gift: g }) => seen.push(g.seq));
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    FakeSocket.last().push(welcome(2));
    FakeSocket.last().push([giftMsg(5), giftMsg(6)]);
    await until(() => seen.length === 4);
    assert.deepEqual(seen, [3, 4, 5, 6]);
  });

  test("close codes: 1000 and 4404 stop, 4401 asks for a fresh token, 4429 backs off longer", async () => {
    let n = 0;
    const room = track(makeRoom({ getToken: () => "tok" + ++n }));
    const closed = [];
    room.on("closed", (c) => closed.push(c.code));
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    FakeSocket.last().drop(4401);
    await until(() => FakeSocket.all.length === 2);
    assert.match(FakeSocket.last().url, /token=tok2/);
    FakeSocket.last().push(welcome(1));
    FakeSocket.last().drop(4404);
    await tick();
    assert.deepEqual(closed, [4404]);
    assert.equal(room.status, "ended");
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(FakeSocket.all.length, 2, "no reconnect after the stream ended");

    const slow = track(makeRoom());
    let delay = null;
    const realSetTimeout = globalThis.setTimeout;
    await slow.connect();
    await until(() => FakeSocket.all.length === 3);
    globalThis.setTimeout = (fn, ms, ...a) => { if (ms >= 5000 && delay === null) delay = ms; return realSetTimeout(fn, ms, ...a); };
    try { FakeSocket.last().drop(4429); } finally { globalThis.setTimeout = realSetTimeout; }
    assert.ok(delay >= 5000, `4429 waits at least 5 s, got ${delay}`);
  });

  test("ready() rejects when the stream is gone before any welcome", async () => {
    const room = track(makeRoom());
    await room.connect();
    const ready = room.ready();
    await until(() => FakeSocket.all.length === 1);
    FakeSocket.last().drop(4404, "unknown stream");
    await assert.rejects(ready, (e) => e instanceof GiftingError && e.code === "stream_not_live");
  });

  test("a gift whose ack was lost with the socket is re-sent with the same key after the resume", async () => {
    const room = track(makeRoom());
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    FakeSocket.last().push(welcome(0));
    const sent = room.sendGift("rose", 2);
    const first = FakeSocket.last().sent.find((m) => m.type === "send_gift");
    assert.ok(first.idempotency_key.length >= 32);
    FakeSocket.last().drop(1006); // committed or not? nobody knows
    await until(() => FakeSocket.all.length === 2);
    FakeSocket.last().push(welcome(1, true));
    const again = FakeSocket.last().sent.find((m) => m.type === "send_gift");
    assert.equal(again.idempotency_key, first.idempotency_key);
    FakeSocket.last().push({ type: "ack", ref: again.ref, gift: gift(1), balance: 5 });
    assert.deepEqual((await sent).balance, 5);
  });

  test("unavailable (a draining gateway) is retried with the same key; a refusal is its typed error", async () => {
    const room = track(makeRoom());
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    const ws = FakeSocket.last();
    ws.push(welcome(0));
    const p = room.sendGift("rose");
    const m1 = ws.sent.at(-1);
    ws.push({ type: "error", ref: m1.ref, code: "unavailable", message: "draining" });
    await until(() => ws.sent.length === 2);
    assert.equal(ws.sent[1].idempotency_key, m1.idempotency_key);
    ws.push({ type: "error", ref: m1.ref, code: "insufficient_funds", message: "no coins" });
    await assert.rejects(p, InsufficientFundsError);
  });

  test("not connected: the gift goes over HTTP with the same key", async () => {
    const bodies = [];
    const room = track(makeRoom({ options: { httpFallbackMs: 5 }, routes: {
      "POST /v1/streams/7/gifts": async (_p, body) => { bodies.push(body); return bodies.length === 1
        ? [503, { error: { code: "unavailable", message: "busy" } }] : [201, { gift: gift(1), balance: 3 }]; } } }));
    await room.connect();
    const res = await room.sendGift("rose", 1, { idempotencyKey: "k-1" });
    assert.equal(res.balance, 3);
    assert.deepEqual(bodies.map((b) => b.idempotency_key), ["k-1", "k-1"]);
  });

  test("auth is refreshed before the token expires", async () => {
    let n = 0;
    const soon = Math.floor(Date.now() / 1000) + 2;
    const room = track(makeRoom({ getToken: () => (++n === 1 ? jwt(soon) : jwt(soon + 3600)),
                                  options: { refreshBeforeMs: 1500 } }));
    await room.connect();
    await until(() => FakeSocket.all.length === 1);
    FakeSocket.last().push(welcome(0));
    await until(() => FakeSocket.last().sent.some((m) => m.type === "auth"), 3000);
    assert.equal(FakeSocket.last().sent.find((m) => m.type === "auth").token, jwt(soon + 3600));
  });
});

describe("http", () => {
  test("a purchase keeps its key through 503s and network errors; out of retries it is OutcomeUnknown", async () => {
    const keys = [];
    let fail = 0;
    const fetch = async (url, init) => {
      keys.push(JSON.parse(init.body).idempotency_key);
      if (fail++ < 2) throw new TypeError("fetch failed");
      return new Response(JSON.stringify({ error: { code: "unavailable", message: "x" } }), { status: 503 });
    };
    const c = new GiftingClient({ baseUrl: "http://api", fetch, retries: 3, backoff: { baseMs: 1, capMs: 1 } });
    const err = await c.purchase("coins_70").catch((e) => e);
    assert.ok(err instanceof OutcomeUnknownError, String(err));
    assert.equal(new Set(keys).size, 1);
    assert.equal(keys.length, 4);
    assert.equal(err.idempotencyKey, keys[0]);
  });

  test("errors carry code, status and details", async () => {
    const c = new GiftingClient({ baseUrl: "http://api", fetch: fakeFetch({ "POST /v1/streams/1/gifts": async () =>
      [403, { error: { code: "spending_limit", message: "daily", details: { limit: "daily", remaining_coins: 3 } } }] }) });
    const err = await c.sendGift("1", "rose").catch((e) => e);
    assert.ok(err instanceof SpendingLimitError);
    assert.equal(err.status, 403);
    assert.equal(err.details.remaining_coins, 3);
  });
});
