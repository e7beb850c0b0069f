// One live room over the WebSocket gateway: connect, welcome, resume with `since` after any drop
// (full-jitter backoff with a cap), dedupe by seq, reload over HTTP after a gap, refresh the token
// before it expires, fold the state messages into one RoomState, and send gifts that are charged
// once however often the socket drops.

import { GiftingError, OutcomeUnknownError, UnauthorizedError, errorFor } from "./errors.js";
import { createRoomState, foldGift, foldState, foldWelcome, prune } from "./state.js";
import { Emitter, backoffDelay, newKey, parseFrame, tokenExpiry } from "./util.js";

/**
 * @typedef {import("./types.js").GiftEvent} GiftEvent
 * @typedef {import("./types.js").ServerMessage} ServerMessage
 * @typedef {import("./state.js").RoomState} RoomState
 * @typedef {import("./state.js").StateKey} StateKey
 * @typedef {import("./http.js").HttpClient} HttpClient
 * @typedef {import("./http.js").GiftResult} GiftResult
 * @typedef {"connecting" | "live" | "reconnecting" | "reloading" | "ended" | "closed"} RoomStatus
 * @typedef {{ readyState: number, send(data: string): void, close(code?: number, reason?: string): void,
 *   onopen: any, onmessage: any, onclose: any, onerror: any }} SocketLike
 * @typedef {new (url: string) => SocketLike} SocketCtor
 * @typedef {{
 *   welcome: import("./types.js").WelcomeMessage,
 *   gift: { gift: GiftEvent, replay: boolean },
 *   change: { keys: StateKey[], state: RoomState },
 *   status: RoomStatus,
 *   gap: { from: number, to: number, recovered: boolean | null, skipped: number },
 *   viewers: import("./types.js").ViewersMessage,
 *   leaderboard: import("./types.js").LeaderboardMessage,
 *   earnings: import("./types.js").EarningsMessage,
 *   goal: import("./types.js").GoalMessage,
 *   stream: import("./types.js").StreamMessage,
 *   battle: import("./types.js").BattleMessage,
 *   message_hidden: import("./types.js").MessageHiddenMessage,
 *   stream_ended: import("./types.js").StreamEndedMessage,
 *   pong: import("./types.js").PongMessage,
 *   authed: import("./types.js").AuthedMessage,
 *   error: GiftingError,
 *   closed: { code: number, reason: string, error: GiftingError | null },
 * }} RoomEvents
 * @typedef {{
 *   streamId: string | number, wsUrl: string | (() => string | Promise<string>),
 *   getToken: () => string | Promise<string>, WebSocket?: SocketCtor, http?: HttpClient | null,
 *   backoff?: import("./util.js").BackoffOptions, ackTimeoutMs?: number, sendTimeoutMs?: number,
 *   httpFallbackMs?: number, openTimeoutMs?: number, refreshBeforeMs?: number, maxReload?: number,
 *   retryRefused?: number
 * }} RoomOptions
 * @typedef {{ ref: string, body: Record<string, unknown>, key: string, resolve: (r: GiftResult) => void,
 *   reject: (e: unknown) => void, tries: number, timers: any[], viaHttp: boolean, sentOn: SocketLike | null }} Intent
 */

const OPEN = 1;
/** Close codes after which the room stops for good. */
const FINAL = new Set([1000, 4404, 4403, 1008, 1009]);

/** @extends {Emitter<RoomEvents>} */
export class Room extends Emitter {
  /** @param {RoomOptions} o */
  constructor(o) {
    super();
    this.o = o;
    this.streamId = String(o.streamId);
    /** @type {RoomState} */
    this.state = createRoomState(this.streamId);
    /** @type {RoomStatus} */
    this.status = "closed";
    /** @type {SocketLike | null} */
    this.ws = null;
    this.live = false; // welcomed on the current socket
    this.stopped = true;
    this.attempt = 0;
    this.unauthorized = 0;
    this.refs = 0;
    /** @type {Map<string, Intent>} gifts sent and not yet answered, by ref */
    this.pending = new Map();
    /** @type {ServerMessage[] | null} messages held while an HTTP reload fills a gap */
    this.held = null;
    /** @type {any} */ this.retryTimer = null;
    /** @type {any} */ this.authTimer = null;
    /** @type {any} */ this.openTimer = null;
    this.token = "";
    this.holdUntil = 0;
    this.backoff = { baseMs: 500, capMs: 30000, ...o.backoff };
    this.Socket = o.WebSocket ?? /** @type {SocketCtor | undefined} */ (/** @type {any} */ (globalThis).WebSocket);
    if (!this.Socket) throw new TypeError("no WebSocket: pass { WebSocket } (e.g. from the 'ws' package on Node 20)");
  }

  /** Opens the room; resolves once the connection attempt started. Events tell the rest. */
  async connect() {
    if (!this.stopped) return;
    this.stopped = false;
    await this._open();
  }

  /** Leaves the room for good. Unanswered gifts are settled over HTTP with their keys when possible. */
  close() {
    this.stopped = true;
    this._setStatus("closed");
    this._clearTimers();
    const ws = this.ws;
    this.ws = null;
    this.live = false;
    if (ws) ws.close(1000);
    this._settleOverHttp();
  }

  /**
   * Resolves on the next `welcome` (at once when live); rejects if the room stops first.
   * @returns {Promise<RoomState>}
   */
  ready() {
    if (this.live) return Promise.resolve(this.state);
    return new Promise((resolve, reject) => {
      const offs = [
        this.on("welcome", () => { offs.forEach((f) => f()); resolve(this.state); }),
        this.on("closed", (c) => {
          offs.forEach((f) => f());
          reject(c.error ?? errorFor("stream_not_live", `the room closed with ${c.code}`));
        }),
      ];
    });
  }

  /**
   * Sends a gift. Call it once per user action: the idempotency key is made here (or given), and every
   * retry — after an ack timeout, a dropped socket, `unavailable`, a reconnect or the HTTP fallback —
   * sends the same key, so the gift is charged at most once. An ambiguous outcome is resolved by
   * replaying the key, never by a new send.
   * @param {string} giftId @param {number} [count]
   * @param {{ idempotencyKey?: string, message?: string }} [o]
   * @returns {Promise<GiftResult>}
   */
  sendGift(giftId, count = 1, o = {}) {
    const key = o.idempotencyKey ?? newKey();
    const ref = "g" + ++this.refs;
    /** @type {Record<string, unknown>} */
    const body = { type: "send_gift", ref, gift_id: giftId, count, idempotency_key: key };
    if (o.message != null) body.message = o.message;
    return new Promise((resolve, reject) => {
      /** @type {Intent} */
      const it = { ref, body, key, resolve, reject, tries: 0, timers: [], viaHttp: false, sentOn: null };
      this.pending.set(ref, it);
      if (this.stopped) {
        // the room is closed or the stream ended: nothing went out; the HTTP API answers for sure
        if (this.o.http) this._viaHttp(it, true);
        else this._finish(it, errorFor("network_error", "the room is closed"), null);
        return;
      }
      it.timers.push(setTimeout(() => this._giveUp(it), this.o.sendTimeoutMs ?? 30000));
      it.timers.push(setTimeout(() => { if (!it.sentOn) this._viaHttp(it); }, this.o.httpFallbackMs ?? 4000));
      this._transmit(it);
    });
  }

  /**
   * Drops the socket as a network failure would, and stays away at least `holdMs` before resuming
   * (for tests, demos and the curious).
   * @param {number} [holdMs]
   */
  simulateDrop(holdMs = 0) {
    this.holdUntil = Date.now() + holdMs;
    if (this.ws) this.ws.close(4000, "dropped by the client");
  }

  /** Measures the round trip (`ping` → `pong`). */
  ping() {
    const ref = "p" + ++this.refs;
    this._send({ type: "ping", ref });
    return ref;
  }

  // ---- the connection loop ---------------------------------------------------------------

  async _open() {
    if (this.stopped) return;
    this._setStatus(this.state.seq === null ? "connecting" : "reconnecting");
    let url;
    try {
      this.token = await this.o.getToken();
      const base = typeof this.o.wsUrl === "function" ? await this.o.wsUrl() : this.o.wsUrl;
      url = `${base.replace(/\/$/, "")}/v1/streams/${encodeURIComponent(this.streamId)}/live?token=${encodeURIComponent(this.token)}`;
    } catch (e) {
      this.emit("error", e instanceof GiftingError ? e : errorFor("network_error", String(e)));
      this._retry(1006);
      return;
    }
    if (this.stopped) return;
    if (this.state.seq !== null) url += `&since=${this.state.seq}`;
    const Socket = /** @type {SocketCtor} */ (this.Socket);
    const ws = new Socket(url);
    this.ws = ws;
    this.live = false;
    ws.onmessage = (/** @type {{ data: any }} */ ev) => { if (this.ws === ws) this._frame(String(ev.data)); };
    ws.onclose = (/** @type {{ code: number, reason: string }} */ ev) => this._closed(ws, ev.code, ev.reason || "");
    ws.onerror = () => {}; // a close follows
    clearTimeout(this.openTimer);
    this.openTimer = setTimeout(() => { if (this.ws === ws && !this.live) ws.close(4000, "no welcome"); },
                                this.o.openTimeoutMs ?? 10000);
  }

  /** @param {SocketLike} ws @param {number} code @param {string} reason */
  _closed(ws, code, reason) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.live = false;
    clearTimeout(this.authTimer);
    clearTimeout(this.openTimer);
    for (const it of this.pending.values()) if (it.sentOn === ws) it.sentOn = null; // resend on the next welcome
    if (this.stopped) return;
    /** @type {GiftingError | null} */
    let error = null;
    if (code === 4401) {
      // the next attempt asks getToken() for a fresh one; twice in a row without a welcome: stop
      if (++this.unauthorized >= 2) error = new UnauthorizedError("unauthorized", reason || "token refused", {});
    } else if (FINAL.has(code)) {
      error = code === 1000 || code === 4404 ? null : errorFor(code === 4403 ? "forbidden" : "invalid_request",
                                                                reason || `closed with ${code}`);
    }
    if (error || FINAL.has(code)) {
      this.stopped = true;
      this._setStatus(code === 1000 || code === 4404 ? "ended" : "closed");
      this._clearTimers();
      this._settleOverHttp();
      this.emit("closed", { code, reason, error });
      return;
    }
    this._retry(code);
  }

  /** @param {number} code */
  _retry(code) {
    if (this.stopped) return;
    this._setStatus("reconnecting");
    // 4401: a fresh token, soon. 4429: the server asked us to slow down: wait longer.
    const o = code === 4429 ? { ...this.backoff, floorMs: 5000, baseMs: 5000, capMs: 120000 } : this.backoff;
    const delay = Math.max(this.holdUntil - Date.now(),
                           code === 4401 && this.unauthorized === 1 ? 0 : backoffDelay(this.attempt, o));
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._open(), delay);
  }

  /** @param {string} data */
  _frame(data) {
    let msgs;
    try { msgs = parseFrame(data); } catch { return; }
    this._process(msgs);
  }

  /** @param {ServerMessage[]} msgs */
  _process(msgs) {
    const now = Date.now();
    /** @type {Set<StateKey>} */
    const changed = new Set();
    const s = this.state;
    for (let i = 0; i < msgs.length; i++) {
      const m = msgs[i];
      if (this.held && m.type !== "ack" && m.type !== "error" && m.type !== "pong" && m.type !== "authed") {
        this.held.push(m);
        continue;
      }
      switch (m.type) {
        case "welcome": {
          const first = s.seq === null;
          foldWelcome(s, m, changed);
          if (!first && m.recovered === false && m.seq - /** @type {number} */ (s.seq) > (this.o.maxReload ?? 1000)) {
            // too much to reload: part is skipped, so the welcome's count is the better one
            s.stream = { ...m.stream, coins_received: Math.max(m.stream.coins_received, s.stream?.coins_received ?? 0) };
          }
          this.live = true;
          this.attempt = 0;
          this.unauthorized = 0;
          clearTimeout(this.openTimer);
          if (first) { s.seq = m.seq; changed.add("seq"); }
          this._setStatus("live");
          this.emit("welcome", m);
          this._scheduleAuth();
          for (const it of this.pending.values()) if (!it.sentOn) this._transmit(it);
          if (!first && m.recovered === false && m.seq > /** @type {number} */ (s.seq)) {
            this._reload(/** @type {number} */ (s.seq), m.seq, false, msgs.slice(i + 1));
            return this._changed(changed);
          }
          break;
        }
        case "gift": {
          const g = m.gift;
          const r = foldGift(s, g, changed, now);
          if (r === "ok") this.emit("gift", { gift: g, replay: g.seq <= s.baseSeq });
          else if (r === "gap") {
            this._reload(/** @type {number} */ (s.seq), g.seq - 1, null, msgs.slice(i));
            return this._changed(changed);
          }
          break;
        }
        case "ack":
        case "error": {
          const it = m.ref != null ? this.pending.get(String(m.ref)) : undefined;
          if (m.type === "ack") { if (it) this._finish(it, null, { gift: m.gift, balance: m.balance }); break; }
          const err = errorFor(m.code, m.message, { ref: m.ref, details: m.details ?? null });
          if (!it) { this.emit("error", err); break; }
          if (err.code === "unavailable" || err.code === "internal_error" || err.code === "rate_limited") {
            // refused before any effect (or interrupted): the same key again, a little later
            if (it.tries < (this.o.retryRefused ?? 5)) {
              it.sentOn = null;
              it.timers.push(setTimeout(() => this._transmit(it), backoffDelay(it.tries, { baseMs: 300, capMs: 4000 })));
              break;
            }
          }
          this._finish(it, err, null);
          break;
        }
        case "pong": this.emit("pong", m); break;
        case "authed": this.emit("authed", m); this._scheduleAuth(m.expires_at * 1000); break;
        default:
          foldState(s, m, changed);
          this.emit(m.type, /** @type {any} */ (m));
          if (m.type === "stream_ended") this._setStatus("ended");
      }
    }
    prune(s, changed, now);
    this._changed(changed);
  }

  /** @param {Set<StateKey>} changed */
  _changed(changed) {
    if (changed.size) this.emit("change", { keys: [...changed], state: this.state });
  }

  /**
   * Fills (from, to] over HTTP, holding live messages meanwhile, then goes on with them.
   * At most `maxReload` gifts are fetched: an older hole is skipped (and said so in `gap`).
   * @param {number} from @param {number} to @param {boolean | null} recovered @param {ServerMessage[]} rest
   */
  async _reload(from, to, recovered, rest) {
    this.held = rest.slice();
    this._setStatus("reloading");
    const s = this.state;
    const max = this.o.maxReload ?? 1000;
    let start = Math.max(from, to - max);
    const skipped = start - from;
    this.emit("gap", { from, to, recovered, skipped });
    /** @type {Set<StateKey>} */
    const changed = new Set();
    try {
      if (!this.o.http) throw new Error("no HTTP client to reload with");
      if (skipped) { s.seq = start; changed.add("seq"); }
      while (start < to) {
        const page = await this.o.http.streamGifts(this.streamId, start, Math.min(1000, to - start));
        for (const g of page.gifts) {
          if (g.seq > to) break;
          if (foldGift(s, g, changed, Date.now()) === "ok") this.emit("gift", { gift: g, replay: g.seq <= s.baseSeq });
        }
        const last = page.gifts.length ? page.gifts[page.gifts.length - 1].seq : to;
        if (last <= start) break;
        start = last;
      }
    } catch (e) {
      this.emit("error", e instanceof GiftingError ? e : errorFor("network_error", String(e)));
    }
    // whatever could not be fetched is skipped: the room goes on from `to`
    if (s.seq === null || s.seq < to) { s.seq = to; changed.add("seq"); }
    this._changed(changed);
    const held = this.held;
    this.held = null;
    if (this.ws && this.live) this._setStatus("live");
    this._process(held);
  }

  /** Sends `auth` with a fresh token ahead of the current one's expiry. @param {number | null} [expMs] */
  _scheduleAuth(expMs) {
    clearTimeout(this.authTimer);
    const exp = expMs ?? tokenExpiry(this.token);
    if (!exp) return;
    const left = exp - Date.now();
    const delay = Math.max(1000, left - Math.min(this.o.refreshBeforeMs ?? 60000, left / 2));
    this.authTimer = setTimeout(async () => {
      try {
        const token = await this.o.getToken();
        if (token && token !== this.token) {
          this.token = token;
          this._send({ type: "auth", token, ref: "a" + ++this.refs });
        } else {
          this._scheduleAuth(exp); // same token handed back: ask again later
        }
      } catch (e) {
        this.emit("error", e instanceof GiftingError ? e : errorFor("unauthorized", String(e)));
      }
    }, delay);
  }

  // ---- gifts -------------------------------------------------------------------------------

  /** @param {Intent} it */
  _transmit(it) {
    if (it.viaHttp || !this.pending.has(it.ref)) return;
    if (!this.ws || !this.live || this.ws.readyState !== OPEN) return; // the next welcome sends it
    it.tries += 1;
    it.sentOn = this.ws;
    this.ws.send(JSON.stringify(it.body));
    const ws = this.ws;
    // no answer on a socket that looks open: send the same key again (the server replays)
    it.timers.push(setTimeout(() => { if (it.sentOn === ws && this.pending.has(it.ref)) { it.sentOn = null; this._transmit(it); } },
                              this.o.ackTimeoutMs ?? 8000));
  }

  /**
   * Not connected for a while (or no answer in time): the HTTP API takes the same request with the
   * same key, and the server replays it if the socket's send was committed.
   * @param {Intent} it @param {boolean} [final] no more tries after this one
   */
  async _viaHttp(it, final = false) {
    if (!this.o.http || it.viaHttp || !this.pending.has(it.ref)) return;
    it.viaHttp = true;
    const b = it.body;
    try {
      const r = await this.o.http.sendGift(this.streamId, String(b.gift_id), Number(b.count),
        { idempotencyKey: it.key, message: /** @type {string | undefined} */ (b.message) });
      this._finish(it, null, r);
    } catch (e) {
      if (e instanceof OutcomeUnknownError && !final && !this.stopped) { it.viaHttp = false; this._transmit(it); return; }
      this._finish(it, e, null);
    }
  }

  /** @param {Intent} it */
  _giveUp(it) {
    if (!this.pending.has(it.ref) || it.viaHttp) return; // an HTTP call in flight answers itself
    if (this.o.http) { this._viaHttp(it, true); return; }
    this._finish(it, new OutcomeUnknownError("no answer in time; replay the key to learn the outcome", it.key), null);
  }

  /** @param {Intent} it @param {unknown} err @param {GiftResult | null} res */
  _finish(it, err, res) {
    if (!this.pending.delete(it.ref)) return;
    for (const t of it.timers) clearTimeout(t);
    if (res) it.resolve(res); else it.reject(err);
  }

  _settleOverHttp() {
    for (const it of [...this.pending.values()]) {
      if (this.o.http) this._viaHttp(it, true);
      else this._finish(it, new OutcomeUnknownError("the room closed before an answer", it.key), null);
    }
  }

  /** @param {Record<string, unknown>} msg */
  _send(msg) {
    if (this.ws && this.ws.readyState === OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** @param {RoomStatus} s */
  _setStatus(s) {
    if (this.status === s) return;
    this.status = s;
    this.emit("status", s);
  }

  _clearTimers() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.authTimer);
    clearTimeout(this.openTimer);
  }
}
