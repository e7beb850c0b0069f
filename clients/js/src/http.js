// The HTTP API with money safety: a gift or purchase takes its idempotency key once, and every
// retry (a 502/503/504, a network error, a timeout) sends the same key, so the server replays the
// first result instead of charging twice.

import { GiftingError, NetworkError, OutcomeUnknownError, errorFor } from "./errors.js";
import { backoffDelay, newKey, sleep } from "./util.js";

/**
 * @typedef {import("./types.js").GiftEvent} GiftEvent
 * @typedef {import("./types.js").Purchase} Purchase
 * @typedef {import("./types.js").Stream} Stream
 * @typedef {() => string | null | undefined | Promise<string | null | undefined>} GetToken
 * @typedef {{
 *   baseUrl?: string, getToken?: GetToken, fetch?: typeof fetch, retries?: number, timeoutMs?: number,
 *   backoff?: import("./util.js").BackoffOptions
 * }} HttpOptions
 * @typedef {{ body?: unknown, auth?: boolean, retry?: "always" | "refused" | "never" }} RequestOptions
 * @typedef {{ gift: GiftEvent, balance: number }} GiftResult
 * @typedef {{ idempotencyKey?: string, message?: string }} GiftOptions
 */

const AMBIGUOUS_STATUS = new Set([502, 503, 504]);

export class HttpClient {
  /** @param {HttpOptions} [o] */
  constructor(o = {}) {
    this.baseUrl = (o.baseUrl ?? "").replace(/\/$/, "");
    this.getToken = o.getToken ?? (() => null);
    this.fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.retries = o.retries ?? 4;
    this.timeoutMs = o.timeoutMs ?? 15000;
    this.backoff = { baseMs: 250, capMs: 5000, ...o.backoff };
  }

  /**
   * One call with the contract's error body turned into its error class.
   * `retry`: "always" (reads, and writes carrying an idempotency key) retries on a network error,
   * a timeout or 502/503/504; "refused" only on a 503 (refused before it started); "never".
   * @param {string} method @param {string} path @param {RequestOptions} [o]
   * @returns {Promise<any>}
   */
  async request(method, path, o = {}) {
    const retry = o.retry ?? (method === "GET" ? "always" : "refused");
    /** @type {unknown} */
    let last = null;
    let refreshed = false;
    for (let attempt = 0; ; attempt++) {
      /** @type {Record<string, string>} */
      const headers = { Accept: "application/json" };
      if (o.body !== undefined) headers["Content-Type"] = "application/json";
      const token = o.auth === false ? null : await this.getToken();
      if (token) headers.Authorization = "Bearer " + token;
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), this.timeoutMs);
      let resp;
      try {
        resp = await this.fetch(this.baseUrl + path, {
          method, headers, signal: ctl.signal, body: o.body === undefined ? undefined : JSON.stringify(o.body),
        });
      } catch (e) {
        clearTimeout(timer);
        last = new NetworkError("network_error", e instanceof Error ? e.message : String(e));
        if (retry === "always" && attempt < this.retries) { await sleep(backoffDelay(attempt, this.backoff)); continue; }
        throw last;
      }
      let doc;
      try {
        doc = await resp.json();
      } catch {
        doc = null;
      } finally {
        clearTimeout(timer);
      }
      if (resp.ok) return doc;
      const e = doc && typeof doc === "object" && doc.error ? doc.error : {};
      const err = errorFor(e.code || "http_" + resp.status, e.message || resp.statusText,
                           { status: resp.status, details: e.details ?? null });
      if (resp.status === 401 && !refreshed && o.auth !== false) { refreshed = true; continue; } // a fresh token
      const again = retry === "always" ? AMBIGUOUS_STATUS.has(resp.status) : retry === "refused" && resp.status === 503;
      if (again && attempt < this.retries) { last = err; await sleep(backoffDelay(attempt, this.backoff)); continue; }
      throw err;
    }
  }

  /**
   * A money-moving POST: the key is fixed before the first try; when every try ended with no
   * answer, OutcomeUnknownError carries the key so the app can replay it later.
   * @param {string} path @param {Record<string, unknown> & { idempotency_key: string }} body
   */
  async _money(path, body) {
    try {
      return await this.request("POST", path, { body, retry: "always" });
    } catch (e) {
      if (e instanceof GiftingError && (e.code === "network_error" || AMBIGUOUS_STATUS.has(e.status))) {
        throw new OutcomeUnknownError(`no answer after retries: ${e.message}`, body.idempotency_key);
      }
      throw e;
    }
  }

  /** @returns {Promise<{ ws_url: string, dev_sign_in: boolean }>} */
  config() { return this.request("GET", "/v1/config", { auth: false }); }

  /** @returns {Promise<import("./types.js").CatalogGift[]>} */
  async gifts() { return (await this.request("GET", "/v1/gifts", { auth: false })).gifts; }

  /** @returns {Promise<import("./types.js").CoinPack[]>} */
  async coinPacks() { return (await this.request("GET", "/v1/coin-packs", { auth: false })).packs; }

  /** @returns {Promise<import("./types.js").Wallet>} */
  wallet() { return this.request("GET", "/v1/wallet"); }

  /**
   * Buys a coin pack. Call it once per user action; it retries with the same key.
   * @param {string} packId @param {{ idempotencyKey?: string }} [o]
   * @returns {Promise<{ purchase: Purchase, checkout: import("./types.js").Checkout | null }>} the purchase is
   *   "pending" until the provider confirms (see waitForPurchase); `checkout.provider` says who takes the
   *   payment ("external": run the provider's checkout; "sandbox": it completes by itself)
   */
  async purchase(packId, o = {}) {
    const key = o.idempotencyKey ?? newKey();
    const doc = await this._money("/v1/purchases", { pack_id: packId, idempotency_key: key });
    return { purchase: doc.purchase, checkout: doc.checkout ?? null };
  }

  /** @param {string} id @returns {Promise<Purchase>} */
  async getPurchase(id) { return (await this.request("GET", `/v1/purchases/${encodeURIComponent(id)}`)).purchase; }

  /**
   * Polls a purchase until it leaves "pending" (the provider's webhook settles it), or the time runs out
   * (then the last seen purchase, still pending).
   * @param {string} id @param {{ timeoutMs?: number, intervalMs?: number }} [o]
   */
  async waitForPurchase(id, o = {}) {
    const end = Date.now() + (o.timeoutMs ?? 30000);
    for (;;) {
      const p = await this.getPurchase(id);
      if (p.status !== "pending" || Date.now() >= end) return p;
      await sleep(o.intervalMs ?? 250);
    }
  }

  /**
   * Sends a gift over HTTP. Call it once per user action; it retries with the same key.
   * @param {string} streamId @param {string} giftId @param {number} [count] @param {GiftOptions} [o]
   * @returns {Promise<GiftResult>}
   */
  sendGift(streamId, giftId, count = 1, o = {}) {
    /** @type {Record<string, unknown> & { idempotency_key: string }} */
    const body = { gift_id: giftId, count, idempotency_key: o.idempotencyKey ?? newKey() };
    if (o.message != null) body.message = o.message;
    return this._money(`/v1/streams/${encodeURIComponent(streamId)}/gifts`, body);
  }

  /** @param {string} id @returns {Promise<Stream>} */
  async stream(id) { return (await this.request("GET", `/v1/streams/${encodeURIComponent(id)}`)).stream; }

  /** @returns {Promise<Stream[]>} */
  async liveStreams(limit = 100) { return (await this.request("GET", `/v1/streams?status=live&limit=${limit}`)).streams; }

  /** @param {string} title @returns {Promise<Stream>} */
  async createStream(title) { return (await this.request("POST", "/v1/streams", { body: { title } })).stream; }

  /** @param {string} id @returns {Promise<Stream>} */
  async endStream(id) {
    return (await this.request("POST", `/v1/streams/${encodeURIComponent(id)}/end`, { retry: "always" })).stream;
  }

  /**
   * Committed gifts after `afterSeq`, in seq order (what a room reloads after a gap).
   * @param {string} id @param {number} afterSeq @param {number} [limit]
   * @returns {Promise<{ gifts: GiftEvent[], next_after_seq: number | null }>}
   */
  streamGifts(id, afterSeq, limit = 1000) {
    return this.request("GET", `/v1/streams/${encodeURIComponent(id)}/gifts?after_seq=${afterSeq}&limit=${limit}`);
  }

  /** @param {string} id @returns {Promise<import("./types.js").TopEntry[]>} */
  async leaderboard(id, limit = 10) {
    return (await this.request("GET", `/v1/streams/${encodeURIComponent(id)}/leaderboard?limit=${limit}`)).top;
  }

  /** @param {string} id @returns {Promise<GiftEvent[]>} pinned paid messages (v2) */
  async pinned(id) { return (await this.request("GET", `/v1/streams/${encodeURIComponent(id)}/pinned`)).pinned; }

  /** @returns {Promise<any>} */
  earnings() { return this.request("GET", "/v1/creators/me/earnings"); }
}
