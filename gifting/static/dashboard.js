// The creator dashboard: go live, watch gifts and earnings arrive, see settlements.
"use strict";
(() => {
  const { $, el, api, params, coins, cash } = G;
  let me = null;
  let stream = null;
  let room = null;
  const shown = new Set();
  const events = []; // [ms timestamp, coins] of gifts seen live, for the chart

  function say(text, kind) {
    $("#message").textContent = text;
    $("#message").className = "message " + (kind || "");
  }

  function setStreamCoins(n) {
    $("#stream-coins").textContent = coins(n);
    $("#stream-coins").dataset.coins = String(n);
  }

  async function loadEarnings() {
    try {
      const e = await api("GET", "/v1/creators/me/earnings");
      $("#unsettled").textContent = coins(e.unsettled_coins);
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

  // ---- the chart: coins per minute, a bar per 10 s over the last 5 minutes --------------
  const BUCKET = 10_000, BUCKETS = 30;

  function drawChart() {
    const svg = $("#chart");
    const now = Date.now();
    const start = now - BUCKET * BUCKETS;
    const sums = new Array(BUCKETS).fill(0);
    for (const [t, c] of events) {
      if (t >= start) sums[Math.min(BUCKETS - 1, Math.floor((t - start) / BUCKET))] += c;
    }
    while (events.length && events[0][0] < start) events.shift();
    const rates = sums.map((s) => s * (60_000 / BUCKET)); // coins per minute
    const max = Math.max(60, ...rates);
    // viewBox in CSS pixels, so labels keep their shape at any width
    const W = Math.max(200, Math.round(svg.getBoundingClientRect().width) || 600), H = 160, pad = 18, bw = W / BUCKETS;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const ns = "http://www.w3.org/2000/svg";
    const make = (tag, attrs) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      return n;
    };
    const nodes = [];
    for (const f of [0.5, 1]) {
      const y = H - (H - pad) * f;
      nodes.push(make("line", { x1: 0, x2: W, y1: y, y2: y, class: "grid" }));
      const label = make("text", { x: 4, y: y + 12, class: "axis" });
      label.textContent = `${coins(Math.round(max * f))}/min`;
      nodes.push(label);
    }
    rates.forEach((r, i) => {
      const h = (H - pad) * (r / max);
      nodes.push(make("rect", { x: i * bw + 1, y: H - h, width: bw - 2, height: Math.max(0, h), rx: 2, class: "bar" }));
    });
    const last = rates.slice(-6).reduce((a, b) => a + b, 0) / 6; // trailing minute
    svg.replaceChildren(...nodes);
    svg.dataset.total = String(sums.reduce((a, b) => a + b, 0));
    $("#rate").textContent = `${coins(Math.round(last))} / min over the last minute`;
  }

  function addGift(g) {
    if (shown.has(g.seq)) return;
    shown.add(g.seq);
    $("#feed").prepend(G.giftItem(g, ""));
    while ($("#feed").children.length > 100) $("#feed").lastChild.remove();
    events.push([Date.now(), g.coins]);
    drawChart();
  }

  function showLive(s) {
    stream = s;
    $("#offline-controls").hidden = !!s;
    $("#live-controls").hidden = !s;
    if (!s) return;
    $("#stream-title").textContent = s.title;
    $("#stream-id").textContent = s.id;
    $("#started").textContent = G.time(s.started_at);
    $("#viewer-link").href = `/viewer?stream=${encodeURIComponent(s.id)}`;
    setStreamCoins(s.coins_received);
    $("#viewers").textContent = coins(s.viewers);
  }

  async function watch(s) {
    showLive(s);
    shown.clear();
    $("#feed").replaceChildren();
    const { top } = await api("GET", `/v1/streams/${encodeURIComponent(s.id)}/leaderboard?limit=10`);
    G.renderTop($("#top"), top, "");
    G.engage.decorateTop();
    room = new G.LiveRoom(s.id, G.engage.wrap({
      status: (st) => { $("#conn").textContent = st; $("#conn").dataset.state = st; },
      reset: (w, missed) => { setStreamCoins(w.stream.coins_received); if (missed) say("Reconnected; some gifts were missed in the feed."); },
      welcome: (w) => { $("#viewers").textContent = coins(w.viewers); },
      gift: (g) => {
        addGift(g);
        setStreamCoins(Number($("#stream-coins").dataset.coins) + g.coins);
      },
      earnings: (m) => {
        setStreamCoins(Math.max(m.stream_coins, Number($("#stream-coins").dataset.coins)));
        $("#unsettled").textContent = coins(m.unsettled_coins);
      },
      viewers: (m) => { $("#viewers").textContent = coins(m.count); },
      leaderboard: (m) => G.renderTop($("#top"), m.top, ""),
      stream_ended: () => { say("Stream ended.", "ok"); },
      ended: () => { showLive(null); loadEarnings(); },
      unauthorized: () => { G.signOut("creator"); location.reload(); },
    }, s.id, "creator"));
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
    drawChart();
    setInterval(drawChart, 2000);
    setInterval(loadEarnings, 15000);
    await Promise.all([loadEarnings(), findMine()]);
  }

  G.boot("creator", start).catch((e) => { document.body.prepend(el("p", { class: "message bad" }, e.message)); });
})();
