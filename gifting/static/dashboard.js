// The creator dashboard: go live, watch gifts and earnings arrive, see settlements.
//
// Layout (mobile first; docs/pages.md has the picture). Mount points other scripts use:
//   section.control  the stream's controls; room controls (goal, pause, blocks) go right after it
//   #battle          the battle panel (battle.js)
//   #goal            the goal bar (engagement.js); its card shows only while #goal is shown
//   #overlay         in the stream card: #combos (combo bubbles); #celebration (big gifts) over the page
//   #pinned-box      pinned messages: fill #pinned, unhide the box (engagement.js)
//   #settings-slot   in the header menu: a settings panel (spending.js)
// Live-room handlers are one object passed to `new G.LiveRoom(id, handlers)` in watch():
// a feature wraps it (`G.engage.wrap(handlers, ...)`, `G.battle.hook(handlers, ...)`).
//
// The chart is the server's: GET /v1/streams/{id}/coins-per-minute (committed gifts per
// whole minute), fetched on load, again shortly after gifts arrive, and every 30 s, so
// it survives a reload and never counts a gift twice. The cash share is an estimate:
// unsettled coins x the coin's value x the creator's split in force now.
"use strict";
(() => {
  const { $, el, api, params, coins, cash } = G;
  let me = null;
  let stream = null;
  let room = null;
  let battle = null; // the LIVE Match panel (battle.js)
  let split = null; // the split in force (creator_bps), for the estimate
  let coinValueMicros = 0;
  let unsettled = null;
  const shown = new Set();
  const MINUTES = 30;
  let buckets = []; // [{minute, coins}] from the server, oldest first
  let chartTimer = 0;

  function say(text, kind) {
    $("#message").textContent = text;
    $("#message").className = "message " + (kind || "");
  }

  // This stream's coins: what the last welcome said plus the gifts seen since, or the latest
  // earnings message when it is ahead (it may arrive before or after the gifts it counts, so
  // the two are never added together).
  let fromGifts = 0, fromEarnings = 0;
  function setStreamCoins(n) {
    fromGifts = n;
    fromEarnings = 0;
    showStreamCoins();
  }
  function showStreamCoins() {
    const n = Math.max(fromGifts, fromEarnings);
    $("#stream-coins").textContent = coins(n);
    $("#stream-coins").dataset.coins = String(n);
  }

  function setViewers(n) {
    $("#viewers").textContent = coins(n);
    $("#viewers").dataset.count = String(n);
    $("#viewers-label").textContent = n === 1 ? "viewer" : "viewers";
  }

  // ---- the cash estimate ----------------------------------------------------------------
  function setUnsettled(n) {
    unsettled = n;
    $("#unsettled").textContent = coins(n);
    renderEstimate();
  }

  function renderEstimate() {
    if (unsettled === null || !split || !coinValueMicros) return;
    // coins x micro-dollars per coin x basis points: whole cents, rounded down like settlement
    const cents = Math.floor(unsettled * coinValueMicros * split.creator_bps / 10000 / 10000);
    $("#estimate").textContent = "≈ " + cash({ amount: cents, currency: "USD" });
    $("#estimate").dataset.cents = String(cents);
    $("#estimate-note").textContent = `estimate: unsettled coins at your ${split.creator_bps / 100}% split`;
  }

  async function loadSplit() {
    try {
      const { current } = await api("GET", `/v1/admin/creators/${encodeURIComponent(me.id)}/split`);
      split = current;
    } catch (e) { split = null; }
    renderEstimate();
  }

  async function loadEarnings() {
    try {
      const e = await api("GET", "/v1/creators/me/earnings");
      setUnsettled(e.unsettled_coins);
      $("#payable").textContent = cash(e.payable);
      $("#paid").textContent = `${cash(e.paid)} paid out · ${coins(e.settled_coins)} coins settled`;
    } catch (e) {
      $("#payable").textContent = "–";
    }
    try {
      const { items } = await api("GET", "/v1/creators/me/settlements?limit=20");
      const rows = items.map((s) => el("tr", {},
        el("td", {}, new Date(s.cutoff).toLocaleDateString()), el("td", {}, coins(s.gifts)),
        el("td", {}, coins(s.gross_coins)), el("td", {}, cash(s.gross)), el("td", {}, cash(s.creator)),
        el("td", {}, s.agency_id ? `${cash(s.agency)} (${s.agency_id})` : "–")));
      $("#settlements tbody").replaceChildren(...rows);
      if (!rows.length) $("#settlements tbody").replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "empty" }, "No settlements yet.")));
    } catch (e) { /* settlement may be unavailable: the rest of the page still works */ }
  }

  // ---- the chart: coins per minute from the server ------------------------------------------
  async function loadChart() {
    if (!stream) { buckets = []; drawChart(); return; }
    try {
      const doc = await api("GET", `/v1/streams/${encodeURIComponent(stream.id)}/coins-per-minute?minutes=${MINUTES}`);
      buckets = doc.buckets;
    } catch (e) { /* keep what is drawn */ }
    drawChart();
  }

  // Soon after gifts arrive (at most once a second), the chart reloads from the server.
  function chartSoon() {
    if (chartTimer) return;
    chartTimer = setTimeout(() => { chartTimer = 0; loadChart(); }, 1000);
  }

  function drawChart() {
    const svg = $("#chart");
    const ns = "http://www.w3.org/2000/svg";
    const make = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      return n;
    };
    // viewBox in CSS pixels, so labels keep their shape at any width
    const W = Math.max(260, Math.round(svg.getBoundingClientRect().width) || 600), H = 180;
    const left = 44, right = 8, top = 10, bottom = 22, plotH = H - top - bottom, plotW = W - left - right;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const data = buckets.length ? buckets : [];
    const max = Math.max(10, ...data.map((b) => b.coins));
    const nodes = [];
    for (const f of [0, 0.5, 1]) {
      const y = top + plotH * (1 - f);
      nodes.push(make("line", { x1: left, x2: W - right, y1: y, y2: y, class: f === 0 ? "base" : "grid" }));
      nodes.push(make("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, coins(Math.round(max * f))));
    }
    const n = Math.max(1, data.length), bw = plotW / n;
    const step = bw * 5 >= 48 ? 5 : 10;
    const hhmm = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    data.forEach((b, i) => {
      const h = plotH * (b.coins / max);
      const rect = make("rect", { x: left + i * bw + 1, y: top + plotH - h, width: Math.max(1, bw - 2), height: Math.max(0, h),
                                  rx: 2, class: "bar" });
      rect.dataset.minute = b.minute;
      rect.dataset.coins = String(b.coins);
      rect.append(make("title", {}, `${G.time(b.minute)}: ${coins(b.coins)} coins`));
      nodes.push(rect);
      // a time label every 5 (or 10, when narrow) minutes, and "now" under the current minute
      const d = new Date(b.minute);
      if (i === data.length - 1 || (d.getMinutes() % step === 0 && i < data.length - 1 - Math.ceil(40 / bw))) {
        nodes.push(make("text", { x: left + i * bw + bw / 2, y: H - 6, class: "axis", "text-anchor": "middle" },
                        i === data.length - 1 ? "now" : hhmm(d)));
      }
    });
    if (!data.length) {
      nodes.push(make("text", { x: left + plotW / 2, y: top + plotH / 2, class: "axis", "text-anchor": "middle" },
                      stream ? "No gifts yet" : "Go live to see coins per minute"));
    }
    svg.replaceChildren(...nodes);
    const sum = data.reduce((a, b) => a + b.coins, 0);
    svg.dataset.total = String(sum);
    svg.setAttribute("aria-label", `Coins per minute over the last ${MINUTES} minutes: ${coins(sum)} coins in all`);
    const last = data.length ? data[data.length - 1].coins : 0;
    $("#rate").textContent = stream ? `${coins(last)} this minute · ${coins(sum)} in ${MINUTES} min` : "";
  }

  function addGift(g) {
    if (shown.has(g.seq)) return;
    shown.add(g.seq);
    G.feedAdd($("#feed"), G.giftItem(g, "", true));
    G.celebrate(g);
    G.comboBubble(g);
    chartSoon();
  }

  function showLive(s) {
    stream = s;
    $("#offline-controls").hidden = !!s;
    $("#live-controls").hidden = !s;
    if (!s) { drawChart(); return; }
    $("#stream-title").textContent = s.title;
    $("#stream-id").textContent = s.id;
    $("#started").textContent = G.time(s.started_at);
    $("#viewer-link").href = `/viewer?stream=${encodeURIComponent(s.id)}`;
    setStreamCoins(s.coins_received);
    setViewers(s.viewers);
  }

  async function watch(s) {
    showLive(s);
    shown.clear();
    $("#feed").replaceChildren();
    G.feedEmpty($("#feed"));
    const [{ top }] = await Promise.all([
      api("GET", `/v1/streams/${encodeURIComponent(s.id)}/leaderboard?limit=10`), loadChart()]);
    G.renderTop($("#top"), top, "");
    battle = battle || new G.battle.BattlePanel($("#battle"), { streamId: () => stream && stream.id, me: () => me.id, creator: true });
    battle.loadLive();
    G.engage.decorateTop();
    const handlers = {
      status: (st) => { $("#conn").textContent = st; $("#conn").dataset.state = st; },
      reset: (w, missed) => { setStreamCoins(w.stream.coins_received); if (missed) say("Reconnected; some gifts were missed in the feed."); },
      welcome: (w) => setViewers(w.viewers),
      gift: (g) => {
        addGift(g);
        fromGifts += g.coins;
        showStreamCoins();
      },
      earnings: (m) => {
        fromEarnings = Math.max(fromEarnings, m.stream_coins);
        showStreamCoins();
        setUnsettled(m.unsettled_coins);
      },
      viewers: (m) => setViewers(m.count),
      leaderboard: (m) => G.renderTop($("#top"), m.top, ""),
      stream_ended: () => { say("Stream ended.", "ok"); },
      ended: () => { showLive(null); loadEarnings(); },
      unauthorized: () => { G.signOut("creator"); location.reload(); },
    };
    room = new G.LiveRoom(s.id, G.engage.wrap(G.battle.hook(handlers, battle), s.id, "creator"));
    window.gifting = { room };
    await room.open();
  }

  async function goLive(ev) {
    ev.preventDefault();
    try {
      const { stream: s } = await api("POST", "/v1/streams", { title: $("#title").value.trim() || "Live" });
      say("You are live.", "ok");
      await watch(s);
    } catch (e) {
      say(e.code === "already_live" ? "You already have a live stream." : e.message, "bad");
      if (e.code === "already_live") await findMine();
    }
  }

  async function end() {
    if (!stream) return;
    try {
      await api("POST", `/v1/streams/${encodeURIComponent(stream.id)}/end`);
      say("Stream ended.", "ok");
    } catch (e) { say(e.message, "bad"); }
    if (room) room.close();
    showLive(null);
    loadEarnings();
  }

  async function findMine() {
    const { streams } = await api("GET", "/v1/streams?status=live&limit=500");
    // "Go live" may have been pressed while this list was on its way: that stream wins.
    if (stream) return;
    const mine = streams.find((s) => s.creator_id === me.id);
    if (mine) await watch(mine);
    else showLive(null);
  }

  async function start(user) {
    me = user;
    $("#sign-in").hidden = true;
    $("#app").hidden = false;
    $("#me").hidden = false;
    $("#me-name").textContent = user.name;
    $("#go-live").onsubmit = goLive;
    $("#end").onclick = end;
    $("#title").value = params.get("title") || `${user.name} live`;
    const cfg = await G.getConfig();
    coinValueMicros = cfg.coin_value_micros || 0;
    G.rememberCatalog((await api("GET", "/v1/gifts")).gifts);
    G.feedEmpty($("#feed"));
    drawChart();
    setInterval(loadChart, 30000);
    setInterval(loadEarnings, 15000);
    window.addEventListener("resize", drawChart);
    await Promise.all([loadEarnings(), loadSplit(), findMine()]);
  }

  G.boot("creator", start).catch((e) => { document.body.prepend(el("p", { class: "message bad" }, e.message)); });
})();
