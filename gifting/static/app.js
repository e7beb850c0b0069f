// Shared by the viewer page and the creator dashboard: sign-in, a few DOM helpers, and the
// protocol through the client SDK (@gifting/client, served as ES modules under /static/sdk/):
// HTTP calls with typed errors and key-preserving retries, and a live room that resumes with
// `since`, never shows a gift twice, and charges a gift once whatever the socket does.
// Plain browser JavaScript, no build step. Everything user-provided goes into the page with
// textContent, never as HTML.
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

  let token = null;
  const sdk = import("/static/sdk/index.js");
  let client = null;

  async function sdkClient() {
    if (!client) {
      const { GiftingClient } = await sdk;
      client = new GiftingClient({ baseUrl: "", getToken: () => token });
    }
    return client;
  }

  // One call; a contract error comes back as its SDK error class (with .code, .status, .details).
  // A request carrying an idempotency key is retried with that same key after a 503 or a network error.
  async function api(method, path, body) {
    const c = await sdkClient();
    const keyed = body && typeof body === "object" && "idempotency_key" in body;
    return c.request(method, path, { body, retry: method === "GET" || keyed ? "always" : "refused" });
  }

  // An idempotency key, made once when the user acts (every retry reuses it).
  function key(prefix) {
    return (prefix || "k") + "-" + crypto.randomUUID();
  }

  const params = new URLSearchParams(location.search);
  let config = null;

  async function getConfig() {
    if (!config) config = await (await sdkClient()).config();
    return config;
  }

  // Development sign-in (only where the service runs with development secrets);
  // the token lives in this tab's sessionStorage.
  // adult false: a minor's token (the age gate refuses buying, gifting and going live).
  async function signIn(userId, role, name, adult) {
    const doc = await api("POST", "/v1/dev/token", { user_id: userId, role, name: name || userId, adult: adult !== false });
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
  const time = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const plural = (n, one, many) => `${coins(n)} ${n === 1 ? one : many}`;

  // One live room through the SDK's Room, behind the handler interface the pages use:
  // status, reset(welcome, missed), welcome, gift, viewers, leaderboard, earnings, stream_ended,
  // goal, stream, battle, message_hidden, error, ended(code), unauthorized.
  class LiveRoom {
    constructor(streamId, handlers) {
      this.streamId = streamId;
      this.h = handlers;
      this.room = null;
      this.closed = false;
      this.lastWelcome = null;
    }

    async open() {
      const c = await sdkClient();
      if (!c.wsUrl) c.wsUrl = (await getConfig()).ws_url;
      if (this.closed) return;
      const room = c.room(this.streamId);
      this.room = room;
      const h = this.h;
      room.on("status", (s) => this.status(s));
      room.on("welcome", (w) => {
        const first = this.lastWelcome === null;
        this.lastWelcome = w;
        if (first) h.reset && h.reset(w, false);
        h.welcome && h.welcome(w);
      });
      // The SDK reloads a gap over HTTP; only gifts too old to reload are really missed.
      room.on("gap", (g) => { if (g.skipped > 0 && h.reset) h.reset(this.lastWelcome, true); });
      room.on("gift", ({ gift }) => h.gift && h.gift(gift));
      for (const t of ["viewers", "leaderboard", "earnings", "stream_ended", "goal", "stream", "battle", "message_hidden"]) {
        room.on(t, (m) => h[t] && h[t](m));
      }
      room.on("error", (e) => h.error && h.error(e));
      room.on("closed", ({ code, error }) => {
        if (error && error.code === "unauthorized") {
          this.status("signed out");
          h.unauthorized && h.unauthorized();
          return;
        }
        this.status("ended");
        h.ended && h.ended(code);
      });
      await room.connect();
    }

    // Resolves with the ack ({gift, balance}) after the durable commit. The key is the user's
    // action's: the SDK resends it after a drop and falls back to HTTP with it when offline.
    sendGift(giftId, count, idempotencyKey, message) {
      if (!this.room) return Promise.reject(Object.assign(new Error("not connected"), { code: "disconnected" }));
      return this.room.sendGift(giftId, count, message == null ? { idempotencyKey } : { idempotencyKey, message });
    }

    // For tests and the curious: drop the connection as a network failure would,
    // and stay away for at least `holdMs` before resuming.
    drop(holdMs) {
      if (this.room) this.room.simulateDrop(holdMs || 0);
    }

    status(s) { this.h.status && this.h.status(s); }

    close() {
      this.closed = true;
      if (this.room) this.room.close();
    }
  }

  function renderTop(list, top, highlight) {
    list.replaceChildren(...top.map((t, i) => el("li", { class: t.user_id === highlight ? "me" : "", dataset: { user: t.user_id } },
      el("span", { class: "rank" }, String(i + 1)), el("span", { class: "who" }, t.name || t.user_id),
      el("span", { class: "amount" }, coins(t.coins)))));
    if (!top.length) list.replaceChildren(el("li", { class: "empty" }, "No gifts yet"));
  }

  // ---- gift art, the feed, and the live feel (both pages) ------------------------------
  // Every catalog gift has an icon in /static/gifts/ (shipped, never fetched from elsewhere).
  const ICONS = new Set(["rose", "heart", "donut", "hat", "confetti", "sunglasses", "corgi", "money_gun", "galaxy",
                         "whale", "lion", "universe"]);
  const iconUrl = (giftId) => `/static/gifts/${ICONS.has(giftId) ? giftId : "gift"}.svg`;
  const icon = (giftId, cls) => el("img", { class: cls || "icon", src: iconUrl(giftId), alt: "", width: "32", height: "32" });
  // The tier of a gift event (a GiftEvent carries the gift's coins, not its tier): from the catalog when known.
  const tiers = new Map();
  function rememberCatalog(gifts) { for (const g of gifts) tiers.set(g.id, g.tier); }
  const tierOf = (g) => tiers.get(g.gift.id) || (g.gift.coins >= 20000 ? 9 : g.gift.coins >= 1000 ? 6 : g.gift.coins >= 100 ? 3 : 1);
  const HIGH_TIER = 6; // a gift of this tier or more gets the overlay on the stage

  // One feed row. No seq number or second-precise time for a viewer: who, what, how much.
  // `withTime` (the dashboard) adds the minute it was sent.
  function giftItem(g, me, withTime) {
    const tier = tierOf(g);
    return el("li", { class: `gift tier${tier}${tier >= HIGH_TIER ? " high" : ""}${g.sender.id === me ? " mine" : ""}`,
                      dataset: { seq: String(g.seq), giftId: g.gift.id, sender: g.sender.id } },
      icon(g.gift.id),
      el("span", { class: "who" }, g.sender.name || g.sender.id),
      el("span", { class: "what" }, `sent ${g.gift.name}${g.count > 1 ? " ×" + g.count : ""}`),
      el("span", { class: "amount" }, el("span", { class: "coin", "aria-hidden": "true" }, "●"), " " + coins(g.coins)),
      withTime ? el("time", { class: "time", datetime: g.created_at }, time(g.created_at)) : "");
  }

  // A feed with an empty state next to it ("No gifts yet" while the list is empty).
  function feedAdd(list, item, max) {
    list.prepend(item);
    while (list.children.length > (max || 100)) list.lastChild.remove();
    feedEmpty(list);
  }
  function feedEmpty(list) {
    const note = document.getElementById(list.id + "-empty");
    if (note) note.hidden = list.children.length > 0;
  }

  // The overlay for a big gift: it stays a few seconds (longer for a higher tier), one at
  // a time, in arrival order, so a 29,999-coin gift is seen, not scrolled away.
  const celebrations = [];
  let celebrating = false;
  function celebrate(g) {
    if (tierOf(g) < HIGH_TIER) return;
    celebrations.push(g);
    if (!celebrating) nextCelebration();
  }
  function nextCelebration() {
    const box = document.getElementById("celebration");
    const g = celebrations.shift();
    if (!box || !g) { celebrating = false; if (box) box.replaceChildren(); return; }
    celebrating = true;
    const tier = tierOf(g);
    box.replaceChildren(el("div", { class: `burst tier${tier}`, dataset: { giftId: g.gift.id, seq: String(g.seq) } },
      icon(g.gift.id, "burst-icon"),
      el("div", { class: "burst-text" },
        el("b", { class: "who" }, g.sender.name || g.sender.id),
        el("span", {}, ` sent ${g.gift.name}${g.count > 1 ? " ×" + g.count : ""}`)),
      el("div", { class: "burst-coins" }, el("span", { class: "coin", "aria-hidden": "true" }, "●"), " " + coins(g.coins))));
    setTimeout(nextCelebration, Math.min(8000, 3000 + 1000 * (tier - HIGH_TIER + 1)));
  }

  // Combo bubbles from GiftEvent.combo {id, count}: taps of one gift grow one bubble.
  // engagement.js draws them when it is loaded; this is the page's own fallback.
  const bubbles = new Map();
  function comboBubble(g) {
    const box = document.getElementById("combos");
    if (!box || !g.combo || (G.engage && G.engage.wrap)) return;
    let b = bubbles.get(g.combo.id);
    if (!b) {
      const count = el("b", { class: "combo-count" });
      const node = el("div", { class: "combo", dataset: { comboId: g.combo.id, sender: g.sender.id } },
        icon(g.gift.id), el("span", { class: "who" }, g.sender.name || g.sender.id), count);
      b = { node, count, timer: 0 };
      bubbles.set(g.combo.id, b);
      box.append(node);
      while (box.children.length > 4) { const first = box.firstChild; bubbles.forEach((v, k) => { if (v.node === first) bubbles.delete(k); }); first.remove(); }
    }
    b.count.textContent = "×" + coins(g.combo.count);
    b.node.dataset.count = String(g.combo.count);
    b.node.classList.remove("grow"); void b.node.offsetWidth; b.node.classList.add("grow");
    clearTimeout(b.timer);
    b.timer = setTimeout(() => { b.node.remove(); bubbles.delete(g.combo.id); }, 3500);
  }

  // The header menu (sign out, and the settings slot other panels mount into).
  function menu() {
    const btn = $("#menu-btn"), panel = $("#menu");
    if (!btn || !panel) return;
    const set = (open) => { panel.hidden = !open; btn.setAttribute("aria-expanded", String(open)); };
    btn.onclick = () => set(panel.hidden);
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !panel.hidden) { set(false); btn.focus(); } });
  }

  // Both pages start the same way: a saved session, a ?user= with development
  // sign-in, or the sign-in form; then start(session).
  async function boot(role, start) {
    $("#sign-out").onclick = () => { signOut(role); location.href = location.pathname; };
    menu();
    const cfg = await getConfig();
    const asked = params.get("user");
    const saved = restore(role);
    if (saved && (!asked || saved.id === asked)) return start(saved);
    if (asked && cfg.dev_sign_in) {
      return start(await signIn(asked, role, params.get("name") || asked, params.get("minor") === null));
    }
    $("#sign-in").hidden = false;
    if (!cfg.dev_sign_in) $("#sign-in-hint").textContent = "This service has no development sign-in.";
    $("#sign-in-name").value = role + "-" + Math.random().toString(36).slice(2, 6);
    $("#sign-in-form").onsubmit = async (ev) => {
      ev.preventDefault();
      const name = $("#sign-in-name").value.trim();
      const id = name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || role;
      const adult = $("#sign-in-adult") ? $("#sign-in-adult").checked : true;
      try { await start(await signIn(id, role, name, adult)); } catch (e) { $("#sign-in-hint").textContent = e.message; }
    };
  }

  return { $, el, api, key, params, getConfig, signIn, restore, signOut, useToken, coins, cash, time, plural, LiveRoom,
           renderTop, giftItem, feedAdd, feedEmpty, icon, iconUrl, rememberCatalog, tierOf, HIGH_TIER, celebrate,
           comboBubble, boot, sdk };
})();
