// Small pure helpers: idempotency keys, backoff with full jitter, token expiry, frames, an emitter.

/** A fresh idempotency key: made ONCE when the user acts, then reused by every retry. */
export function newKey() {
  return globalThis.crypto.randomUUID();
}

/**
 * @typedef {{ baseMs?: number, capMs?: number, floorMs?: number, random?: () => number }} BackoffOptions
 */

/**
 * Full-jitter exponential backoff: uniform in [floor, floor + min(cap, base·2^attempt)].
 * Thousands of clients dropped at once by a gateway restart spread over the whole window
 * instead of arriving together.
 * @param {number} attempt 0 for the first retry
 * @param {BackoffOptions} [o]
 */
export function backoffDelay(attempt, o = {}) {
  const base = o.baseMs ?? 500, cap = o.capMs ?? 30000, floor = o.floorMs ?? 0;
  const random = o.random ?? Math.random;
  return floor + random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/**
 * The `exp` claim of a JWT in ms since the epoch, or null when it cannot be read.
 * (Read only to schedule the refresh; the server checks the signature.)
 * @param {string} token
 */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4))).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * A frame's messages: the server sends one object or an array of them.
 * @param {string} data
 * @returns {import("./types.js").ServerMessage[]}
 */
export function parseFrame(data) {
  const doc = JSON.parse(data);
  return Array.isArray(doc) ? doc : [doc];
}

/** @param {number} ms @param {AbortSignal} [signal] */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(undefined); }, { once: true });
  });
}

/**
 * A tiny typed event emitter.
 * @template {Record<string, any>} E
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof E, Set<(value: any) => void>>} */
    this._handlers = new Map();
  }

  /**
   * @template {keyof E} K
   * @param {K} type @param {(value: E[K]) => void} fn
   * @returns {() => void} unsubscribes
   */
  on(type, fn) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** @template {keyof E} K @param {K} type @param {(value: E[K]) => void} fn */
  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  /** @template {keyof E} K @param {K} type @param {E[K]} value */
  emit(type, value) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const fn of set) {
      try {
        fn(value);
      } catch (e) {
        // an app handler's bug must not break the protocol loop: report it asynchronously
        setTimeout(() => { throw e; });
      }
    }
  }
}
