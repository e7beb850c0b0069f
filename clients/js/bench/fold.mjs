// Benchmark (not a test): folding one 128-gift frame (the gateway's largest coalesced frame) into
// the room state, through the same path a live socket's frame takes (parse, dedupe, fold, events).
// Prints the median and p99 per frame. Run: npm run bench (Node), or load in a browser page.
import { Room } from "../src/index.js";

class Idle { constructor() { this.readyState = 1; } send() {} close() {} }

const room = new Room({ streamId: "1", wsUrl: "ws://unused", getToken: () => "t", WebSocket: /** @type {any} */ (Idle) });
let gifts = 0;
room.on("gift", () => { gifts++; });
room.on("change", () => {});
const stream = { id: "1", creator_id: "c", title: "t", status: "live", started_at: "2026-01-01T00:00:00Z",
                 ended_at: null, viewers: 1, coins_received: 0 };
const goal = { id: "goal", stream_id: "1", title: "g", target_coins: 1e9, gift_id: null, progress_coins: 0,
               status: "active", created_at: "x", reached_at: null };
room._process([{ type: "welcome", stream, user: { id: "u", role: "viewer" }, seq: 0, viewers: 1, recovered: null,
                 goal, battle: null, pinned: [] }]);

let seq = 0;
let progress = 0;
function frame() {
  const msgs = [];
  for (let i = 0; i < 128; i++) {
    seq += 1;
    progress += 5;
    msgs.push({ type: "gift", seq, gift: {
      id: "g" + seq, stream_id: "1", seq, sender: { id: "u" + (seq % 500), name: "User " + (seq % 500) },
      gift: { id: "rose", name: "Rose", coins: 5 }, count: 1, coins: 5, created_at: new Date().toISOString(),
      combo: { id: "c" + (seq % 40), count: 1 + (seq % 7) }, goal: { id: "goal", progress_coins: progress,
      target_coins: 1e9, reached: false }, battle: null, message: seq % 50 ? null : "hello", pinned_until: null } });
  }
  return JSON.stringify(msgs);
}

const RUNS = 2000;
const frames = Array.from({ length: 200 }, frame); // prebuilt text, as it arrives on the socket
const times = [];
const cpu0 = typeof process !== "undefined" ? process.cpuUsage() : null;
const wall0 = performance.now();
for (let r = 0; r < RUNS; r++) {
  if (r % 200 === 0 && r) for (let i = 0; i < 200; i++) frames[i] = frame();
  const text = frames[r % 200];
  const t0 = performance.now();
  room._frame(text);
  times.push(performance.now() - t0);
}
const wall = performance.now() - wall0;
const cpu = cpu0 ? process.cpuUsage(cpu0) : null;
times.sort((a, b) => a - b);
const warm = times; // includes warm-up: the figure is honest for a cold phone too
const q = (p) => warm[Math.min(warm.length - 1, Math.floor(warm.length * p))];
console.log(`fold a 128-gift frame (parse + dedupe + fold + events), ${RUNS} frames: ` +
            `median ${q(0.5).toFixed(3)} ms, p99 ${q(0.99).toFixed(3)} ms, max ${warm[warm.length - 1].toFixed(3)} ms`);
console.log(`mean per frame: ${(wall / RUNS).toFixed(3)} ms wall` +
            (cpu ? `, ${((cpu.user + cpu.system) / 1000 / RUNS).toFixed(3)} ms CPU` : "") +
            " (on a shared machine the wall-clock tail is other processes' time)");
console.log(`gifts folded ${gifts}, state seq ${room.state.seq}`);
