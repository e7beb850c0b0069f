// The viewer page: pick a live stream, buy coins, send gifts, watch everyone's gifts.
"use strict";
(() => {
  const { $, el, api, key, params, coins, cash } = G;
  let me = null;
  let room = null;
  let streamId = null;
  let catalog = [];
  const shown = new Set(); // gift seqs in the feed: belt and braces against a repeat

  function say(text, kind) {
    const m = $("#message");
    m.textContent = text;
    m.className = "message " + (kind || "");
  }

  async function refreshBalance() {
    const w = await api("GET", "/v1/wallet");
    setBalance(w.coins);
  }

  function setBalance(n) {
    $("#balance").textContent = coins(n);
    $("#balance").dataset.coins = String(n);
    $("#balance").classList.toggle("negative", n < 0);
  }

  async function loadStreams() {
    const { streams } = await api("GET", "/v1/streams?status=live");
    const list = $("#streams");
    list.replaceChildren(...streams.map((s) => el("li", { class: s.id === streamId ? "active" : "" },
      el("a", { href: `?stream=${encodeURIComponent(s.id)}`, dataset: { stream: s.id },
                onclick: (ev) => { ev.preventDefault(); join(s.id); } },
        el("b", {}, s.title), el("span", { class: "sub" }, `${s.creator_id} · ${s.viewers} watching`)))));
    if (!streams.length) list.replaceChildren(el("li", { class: "empty" }, "Nobody is live right now."));
    return streams;
  }

  async function loadCatalog() {
    const [{ gifts }, { packs }] = await Promise.all([api("GET", "/v1/gifts"), api("GET", "/v1/coin-packs")]);
    catalog = gifts;
    $("#catalog").replaceChildren(...gifts.map((g) => el("button", {
      class: "gift-btn tier" + g.tier, dataset: { gift: g.id }, onclick: () => sendGift(g), title: g.name },
      el("span", { class: "name" }, g.name), el("span", { class: "price" }, el("span", { class: "coin" }, "●"), " " + coins(g.coins)))));
    $("#packs").replaceChildren(...packs.map((p) => el("button", {
      class: "pack", dataset: { pack: p.id }, onclick: (ev) => buy(p, ev.currentTarget) },
      el("b", {}, coins(p.coins)), el("span", {}, cash(p.price)))));
  }

  async function buy(pack, button) {
    button.disabled = true;
    try {
      const before = Number($("#balance").dataset.coins || 0);
      const { purchase } = await api("POST", "/v1/purchases", { pack_id: pack.id, idempotency_key: key("buy") });
      say(`Buying ${coins(pack.coins)} coins…`);
      // The provider confirms by webhook; the purchase turns "succeeded" when the coins are in.
      for (let i = 0; i < 60; i++) {
        const { purchase: p } = await api("GET", `/v1/purchases/${encodeURIComponent(purchase.id)}`);
        if (p.status !== "pending") {
          await refreshBalance();
          say(p.status === "succeeded" ? `+${coins(pack.coins)} coins` : `Payment ${p.status}`,
              p.status === "succeeded" ? "ok" : "bad");
          return;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      await refreshBalance();
      say(Number($("#balance").dataset.coins) > before ? "Coins added" : "Payment still pending…");
    } catch (e) {
      say(e.message, "bad");
    } finally {
      button.disabled = false;
    }
  }

  async function sendGift(g) {
    if (!streamId) { say("Pick a live stream first.", "bad"); return; }
    const count = Number($("#count").value);
    const k = key("gift");
    const message = G.engage.message();
    try {
      let res;
      try {
        res = await room.sendGift(g.id, count, k, message);
      } catch (e) {
        if (e.code !== "disconnected") throw e;
        // Not connected right now: the HTTP API takes the same request (same key, same effect).
        res = await api("POST", `/v1/streams/${encodeURIComponent(streamId)}/gifts`,
                        message === null ? { gift_id: g.id, count, idempotency_key: k }
                          : { gift_id: g.id, count, idempotency_key: k, message });
      }
      if (message !== null) G.engage.sent();
      setBalance(res.balance);
      say(`You sent ${g.name}${count > 1 ? " ×" + count : ""}`, "ok");
    } catch (e) {
      const text = { insufficient_funds: "Not enough coins: buy a pack.", wallet_in_debt: "Your wallet is in debt.",
                     self_gift: "You cannot gift your own stream.", stream_not_live: "This stream has ended.",
                     rate_limited: "Slow down a little.", blocked: "The creator does not take your gifts.",
                     gifts_paused: "The creator has paused gifts.",
                     message_not_allowed: "A message needs a bigger gift." }[e.code] || e.message;
      say(text, "bad");
    }
  }

  function addGift(g) {
    if (shown.has(g.seq)) return;
    shown.add(g.seq);
    const feed = $("#feed");
    feed.prepend(G.giftItem(g, me.id));
    while (feed.children.length > 100) feed.lastChild.remove();
    $("#room-coins").textContent = coins(Number($("#room-coins").dataset.coins || 0) + g.coins);
    $("#room-coins").dataset.coins = String(Number($("#room-coins").dataset.coins || 0) + g.coins);
  }

  async function loadRoomState() {
    const [{ stream }, { top }] = await Promise.all([
      api("GET", `/v1/streams/${encodeURIComponent(streamId)}`),
      api("GET", `/v1/streams/${encodeURIComponent(streamId)}/leaderboard?limit=10`)]);
    $("#room-title").textContent = stream.title;
    $("#room-creator").textContent = `${stream.creator_id} · ${stream.status}`;
    $("#viewers").textContent = coins(stream.viewers);
    $("#room-coins").textContent = coins(stream.coins_received);
    $("#room-coins").dataset.coins = String(stream.coins_received);
    G.renderTop($("#top"), top, me.id);
    return stream;
  }

  async function join(id) {
    if (room) room.close();
    streamId = String(id);
    shown.clear();
    $("#feed").replaceChildren();
    history.replaceState(null, "", `?stream=${encodeURIComponent(streamId)}`);
    document.querySelectorAll("#streams li").forEach((li) =>
      li.classList.toggle("active", li.querySelector("a")?.dataset.stream === streamId));
    try {
      const stream = await loadRoomState();
      if (stream.status !== "live") { say("This stream has ended.", "bad"); return; }
    } catch (e) {
      say(e.message, "bad");
      return;
    }
    room = new G.LiveRoom(streamId, G.engage.wrap({
      status: (s) => { $("#conn").textContent = s; $("#conn").dataset.state = s; },
      reset: (welcome, missed) => {
        $("#room-coins").textContent = coins(welcome.stream.coins_received);
        $("#room-coins").dataset.coins = String(welcome.stream.coins_received);
        if (missed) {
          $("#feed").prepend(el("li", { class: "gap" }, "Some gifts were missed while you were away."));
          loadRoomState().catch(() => {});
        }
      },
      welcome: (w) => { $("#viewers").textContent = coins(w.viewers); },
      gift: addGift,
      viewers: (m) => { $("#viewers").textContent = coins(m.count); },
      leaderboard: (m) => G.renderTop($("#top"), m.top, me.id),
      stream_ended: () => { say("The stream has ended.", "bad"); $("#room-creator").textContent += " · ended"; },
      ended: () => loadStreams().catch(() => {}),
      unauthorized: () => { G.signOut("viewer"); location.reload(); },
    }, streamId, "viewer"));
    window.gifting = { room }; // for tests: room.drop() simulates a network drop
    await room.open();
  }

  async function start(user) {
    me = user;
    $("#sign-in").hidden = true;
    $("#app").hidden = false;
    $("#me").hidden = false;
    $("#me-name").textContent = user.name;
    await Promise.all([loadCatalog(), refreshBalance()]);
    const streams = await loadStreams();
    const wanted = params.get("stream") || (streams[0] && streams[0].id);
    if (wanted) await join(wanted);
    setInterval(() => loadStreams().catch(() => {}), 5000);
  }

  G.boot("viewer", start).catch((e) => { document.body.prepend(el("p", { class: "message bad" }, e.message)); });
})();
