// Shared by the viewer page and the creator dashboard: HTTP calls, sign-in,
// and a live-room socket that resumes with `since` and never shows a gift twice.
// Plain browser JavaScript, no build step. Everything user-provided goes into
// the page with textContent, never as HTML.
"use strict";

const G = (() => {
  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  let token = null;

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers["Authorization"] = "Bearer " + token;
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const doc = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const e = doc.error || {};
      throw new ApiError(resp.status, e.code || "http_" + resp.status, e.message || resp.statusText);
    }
    return doc;
  }

  function key(prefix) {
    const rnd = (self.crypto && crypto.randomUUID) ? crypto.randomUUID()
      : Math.random().toString(36).slice(2) + Date.now().toString(36);
    return (prefix || "k") + "-" + rnd;
  }

  const params = new URLSearchParams(location.search);
  let config = null;

  async function getConfig() {
    if (!config) config = await api("GET", "/v1/config");
    return config;
  }

  // Development sign-in (only where the service runs with development secrets);
  // the token lives in this tab's sessionStorage.
  async function signIn(userId, role, name) {
    const doc = await api("POST", "/v1/dev/token", { user_id: userId, role, name: name || userId });
    token = doc.token;
    sessionStorage.setItem("gifting." + role, JSON.stringify({ token, user: doc.user }));
    return doc.user;
  }

  function restore(role) {
    const saved = JSON.parse(sessionStorage.getItem("gifting." + role) || "null");
    if (saved) token = saved.token;
    return saved ? saved.user : null;
  }

  function signOut(role) {
    sessionStorage.removeItem("gifting." + role);
    token = null;
  }

  function useToken(t) { token = t; }

  const coins = (n) => Number(n).toLocaleString("en-US");
  const cash = (m) => (m.amount / 100).toLocaleString("en-US", { style: "currency", currency: m.currency });
  const time = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  // One live room over the WebSocket gateway. `handlers` get the contract's
  // messages; gifts arrive in seq order, each exactly once, across reconnects.
  class LiveRoom {
    constructor(streamId, handlers) {
      this.streamId = streamId;
      this.h = handlers;
      this.lastSeq = null; // highest gift seq shown
      this.ws = null;
      this.closed = false;
      this.attempt = 0;
      this.pending = new Map(); // ref -> {resolve, reject}
      this.refs = 0;
      this.holdUntil = 0;
      this.lastWelcome = null;
    }

    async open() {
      const cfg = await getConfig();
      if (this.closed) return;
      let url = `${cfg.ws_url}/v1/streams/${encodeURIComponent(this.streamId)}/live?token=${encodeURIComponent(token)}`;
      if (this.lastSeq !== null) url += `&since=${this.lastSeq}`;
      const ws = new WebSocket(url);
      this.ws = ws;
      this.status("connecting");
      ws.onmessage = (ev) => {
        let doc;
        try { doc = JSON.parse(ev.data); } catch { return; }
        for (const msg of Array.isArray(doc) ? doc : [doc]) this.dispatch(msg);
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        for (const p of this.pending.values()) p.reject(new ApiError(0, "disconnected", "connection lost"));
        this.pending.clear();
        if (this.closed) return;
        if (ev.code === 1000 || ev.code === 4404 || ev.code === 4403) {
          this.status("ended");
          this.h.ended && this.h.ended(ev.code);
          return;
        }
        if (ev.code === 4401) {
          this.status("signed out");
          this.h.unauthorized && this.h.unauthorized();
          return;
        }
        // 1001 going away, 4408 too slow, network drops: come back and resume from lastSeq.
        const delay = Math.max(this.holdUntil - Date.now(),
                               Math.min(10000, 250 * 2 ** this.attempt) * (0.5 + Math.random() / 2));
        this.attempt += 1;
        this.status("reconnecting");
        setTimeout(() => this.open(), delay);
      };
    }

    dispatch(msg) {
      switch (msg.type) {
        case "welcome":
          this.attempt = 0;
          this.lastWelcome = msg;
          if (this.lastSeq === null || msg.recovered === false) {
            // First join, or the gap can no longer be replayed: start from the head and reload state.
            const missed = this.lastSeq !== null && msg.seq > this.lastSeq;
            this.lastSeq = msg.seq;
            this.h.reset && this.h.reset(msg, missed);
          }
          this.status("live");
          this.h.welcome && this.h.welcome(msg);
          break;
        case "gift":
          if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already shown
          this.lastSeq = msg.seq;
          this.h.gift && this.h.gift(msg.gift);
          break;
        case "ack":
        case "error": {
          const p = msg.ref != null && this.pending.get(msg.ref);
          if (p) {
            this.pending.delete(msg.ref);
            if (msg.type === "ack") p.resolve(msg);
            else p.reject(new ApiError(0, msg.code, msg.message));
          } else if (msg.type === "error") {
            this.h.error && this.h.error(msg);
          }
          break;
        }
        default: {
          const f = this.h[msg.type];
          if (f) f(msg);
        }
      }
    }

    // send_gift over the socket; resolves with the ack after the durable commit.
    sendGift(giftId, count, idempotencyKey, message) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        return Promise.reject(new ApiError(0, "disconnected", "not connected"));
      }
      const ref = "r" + (++this.refs);
      return new Promise((resolve, reject) => {
        this.pending.set(ref, { resolve, reject });
        const msg = { type: "send_gift", ref, gift_id: giftId, count, idempotency_key: idempotencyKey };
        if (message != null) msg.message = message;
        this.ws.send(JSON.stringify(msg));
      });
    }

    // For tests and the curious: drop the connection as a network failure would,
    // and stay away for at least `holdMs` before resuming.
    drop(holdMs) {
      this.holdUntil = Date.now() + (holdMs || 0);
      if (this.ws) this.ws.close(4000, "dropped by the page");
    }

    status(s) { this.h.status && this.h.status(s); }

    close() {
      this.closed = true;
      if (this.ws) this.ws.close(1000);
    }
  }

  function renderTop(list, top, highlight) {
    list.replaceChildren(...top.map((t, i) => el("li", { class: t.user_id === highlight ? "me" : "", dataset: { user: t.user_id } },
      el("span", { class: "rank" }, String(i + 1)), el("span", { class: "who" }, t.name || t.user_id),
      el("span", { class: "amount" }, coins(t.coins)))));
    if (!top.length) list.replaceChildren(el("li", { class: "empty" }, "No gifts yet"));
  }

  function giftItem(g, me) {
    return el("li", { class: "gift tier" + Math.min(10, g.gift.coins >= 1000 ? 9 : g.gift.coins >= 100 ? 5 : 1)
                      + (g.sender.id === me ? " mine" : ""), dataset: { seq: String(g.seq), giftId: g.gift.id, sender: g.sender.id } },
      el("span", { class: "seq" }, "#" + g.seq),
      el("span", { class: "who" }, g.sender.name || g.sender.id),
      el("span", { class: "what" }, `sent ${g.gift.name}${g.count > 1 ? " ×" + g.count : ""}`),
      el("span", { class: "amount" }, coins(g.coins)),
      el("span", { class: "time" }, time(g.created_at)));
  }

  // Both pages start the same way: a saved session, a ?user= with development
  // sign-in, or the sign-in form; then start(session).
  async function boot(role, start) {
    $("#sign-out").onclick = () => { signOut(role); location.href = location.pathname; };
    const cfg = await getConfig();
    const asked = params.get("user");
    const saved = restore(role);
    if (saved && (!asked || saved.id === asked)) return start(saved);
    if (asked && cfg.dev_sign_in) return start(await signIn(asked, role, params.get("name") || asked));
    $("#sign-in").hidden = false;
    if (!cfg.dev_sign_in) $("#sign-in-hint").textContent = "This service has no development sign-in.";
    $("#sign-in-name").value = role + "-" + Math.random().toString(36).slice(2, 6);
    $("#sign-in-form").onsubmit = async (ev) => {
      ev.preventDefault();
      const name = $("#sign-in-name").value.trim();
      const id = name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || role;
      try { await start(await signIn(id, role, name)); } catch (e) { $("#sign-in-hint").textContent = e.message; }
    };
  }

  return { $, el, api, key, params, getConfig, signIn, restore, signOut, useToken, coins, cash, time, LiveRoom,
           ApiError, renderTop, giftItem, boot };
})();
