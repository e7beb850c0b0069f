// The room state: pure functions that fold server messages into one object.
// No sockets and no timers here, so tests and the benchmark call them directly.
//
// Counting rule: every gift folded here is one this client had not seen, so it adds its coins to
// `stream.coins_received`. The first `welcome` sets the base; a later one (a resume) keeps the
// running count, since the gifts it replays are added one by one. Goal progress and battle scores
// ride on the gifts as absolute values that only grow, so a replayed (older) gift never moves
// them back; a pin already held is not added twice.

/**
 * @typedef {import("./types.js").Stream} Stream
 * @typedef {import("./types.js").GiftEvent} GiftEvent
 * @typedef {import("./types.js").Goal} Goal
 * @typedef {import("./types.js").Battle} Battle
 * @typedef {import("./types.js").TopEntry} TopEntry
 * @typedef {import("./types.js").Earnings} Earnings
 * @typedef {import("./types.js").ServerMessage} ServerMessage
 * @typedef {{ id: string, count: number, sender: import("./types.js").Sender,
 *   gift: GiftEvent["gift"], last_seq: number, updated_at: number }} ComboState
 * @typedef {{
 *   streamId: string, stream: Stream | null, seq: number | null, baseSeq: number, viewers: number,
 *   leaderboard: TopEntry[], goal: Goal | null, battle: Battle | null, pinned: GiftEvent[],
 *   earnings: Earnings | null, combos: Map<string, ComboState>, ended: boolean
 * }} RoomState
 * @typedef {"stream" | "seq" | "viewers" | "leaderboard" | "goal" | "battle" | "pinned" | "earnings"
 *   | "combos" | "ended"} StateKey
 */

/** How long a combo bubble stays after its latest gift (the server's combo window is 3 s). */
export const COMBO_TTL_MS = 5000;

/** @param {string} streamId @returns {RoomState} */
export function createRoomState(streamId) {
  return {
    streamId, stream: null, seq: null, baseSeq: 0, viewers: 0, leaderboard: [], goal: null,
    battle: null, pinned: [], earnings: null, combos: new Map(), ended: false,
  };
}

/** @param {GiftEvent} a @param {GiftEvent} b */
const pinOrder = (a, b) => b.coins - a.coins || a.seq - b.seq;

/**
 * Takes the state a `welcome` carries (whole, never a delta).
 * @param {RoomState} s @param {import("./types.js").WelcomeMessage} w @param {Set<StateKey>} changed
 */
export function foldWelcome(s, w, changed) {
  const resumed = s.seq !== null && s.stream !== null && s.stream.id === w.stream.id;
  s.stream = resumed && s.stream ? { ...w.stream, coins_received: s.stream.coins_received } : w.stream;
  s.viewers = w.viewers;
  s.baseSeq = w.seq;
  changed.add("stream").add("viewers");
  if ("goal" in w) { s.goal = w.goal ?? null; changed.add("goal"); } else if (w.stream && "goal" in w.stream) {
    s.goal = w.stream.goal ?? null; changed.add("goal");
  }
  if ("battle" in w) { s.battle = w.battle ?? null; changed.add("battle"); }
  if (Array.isArray(w.pinned)) { s.pinned = w.pinned.slice().sort(pinOrder); changed.add("pinned"); }
}

/**
 * Folds one committed gift. Returns "dup" (already folded), "gap" (seq skipped some: nothing folded)
 * or "ok".
 * @param {RoomState} s @param {GiftEvent} g @param {Set<StateKey>} changed @param {number} now ms
 * @returns {"ok" | "dup" | "gap"}
 */
export function foldGift(s, g, changed, now) {
  const seq = g.seq;
  if (s.seq !== null) {
    if (seq <= s.seq) return "dup";
    if (seq !== s.seq + 1) return "gap";
  }
  s.seq = seq;
  changed.add("seq");
  if (g.combo) {
    const c = s.combos.get(g.combo.id);
    if (c) { c.count = Math.max(c.count, g.combo.count); c.last_seq = seq; c.updated_at = now; } else {
      s.combos.set(g.combo.id, { id: g.combo.id, count: g.combo.count, sender: g.sender, gift: g.gift,
                                 last_seq: seq, updated_at: now });
    }
    changed.add("combos");
  }
  // Copy-on-write once per fold (`changed` is per frame): a frame's 128 gifts make one new object
  // each for stream, goal and battle, so a UI can compare references, without 128 copies.
  if (s.stream) {
    if (!changed.has("stream")) s.stream = { ...s.stream };
    s.stream.coins_received += g.coins;
    changed.add("stream");
  }
  const gp = g.goal;
  if (gp && s.goal && s.goal.id === gp.id && gp.progress_coins >= s.goal.progress_coins) {
    const goal = changed.has("goal") ? s.goal : (s.goal = { ...s.goal });
    goal.progress_coins = gp.progress_coins;
    goal.target_coins = gp.target_coins;
    if (gp.reached && goal.status !== "reached") { goal.status = "reached"; goal.reached_at = g.created_at; }
    changed.add("goal");
  }
  const bs = g.battle;
  if (bs && s.battle && s.battle.id === bs.id) {
    if (!changed.has("battle")) s.battle = { ...s.battle, sides: s.battle.sides.map((side) => ({ ...side })) };
    for (const side of s.battle.sides) if (side.stream_id === g.stream_id) side.score = Math.max(side.score, bs.score);
    changed.add("battle");
  }
  if (g.message && g.pinned_until && !g.message_hidden && Date.parse(g.pinned_until) > now
      && !s.pinned.some((p) => p.id === g.id)) {
    s.pinned = [...s.pinned, g].sort(pinOrder);
    changed.add("pinned");
  }
  return "ok";
}

/**
 * Drops pins past their time and combo bubbles past COMBO_TTL_MS.
 * @param {RoomState} s @param {Set<StateKey>} changed @param {number} now
 */
export function prune(s, changed, now) {
  if (s.pinned.length && s.pinned.some((p) => !p.pinned_until || Date.parse(p.pinned_until) <= now)) {
    s.pinned = s.pinned.filter((p) => p.pinned_until && Date.parse(p.pinned_until) > now);
    changed.add("pinned");
  }
  for (const [id, c] of s.combos) {
    if (now - c.updated_at > COMBO_TTL_MS) { s.combos.delete(id); changed.add("combos"); }
  }
}

/**
 * Folds a state message (anything but welcome, gift, ack, error, pong, authed).
 * @param {RoomState} s @param {ServerMessage} m @param {Set<StateKey>} changed
 */
export function foldState(s, m, changed) {
  switch (m.type) {
    case "viewers": s.viewers = m.count; changed.add("viewers"); break;
    case "leaderboard": s.leaderboard = m.top; changed.add("leaderboard"); break;
    case "earnings":
      s.earnings = { stream_coins: m.stream_coins, unsettled_coins: m.unsettled_coins }; changed.add("earnings");
      break;
    case "goal":
      s.goal = m.goal ?? null;
      if (s.stream) s.stream = { ...s.stream, goal: s.goal };
      changed.add("goal");
      break;
    case "battle": s.battle = m.battle ?? null; changed.add("battle"); break;
    case "stream": {
      // Whole state; coins only grow, so never step back behind gifts already folded.
      const coins = Math.max(m.stream.coins_received, s.stream ? s.stream.coins_received : 0);
      s.stream = { ...m.stream, coins_received: coins };
      if ("goal" in m.stream) { s.goal = m.stream.goal ?? null; changed.add("goal"); }
      changed.add("stream");
      break;
    }
    case "message_hidden":
      if (s.pinned.some((p) => p.id === m.gift_id)) {
        s.pinned = s.pinned.filter((p) => p.id !== m.gift_id);
        changed.add("pinned");
      }
      break;
    case "stream_ended":
      s.stream = { ...m.stream, coins_received: Math.max(m.stream.coins_received, s.stream?.coins_received ?? 0) };
      s.ended = true;
      changed.add("stream").add("ended");
      break;
    default: break;
  }
}
