// The viewer page: pick a live stream, watch everyone's gifts, buy coins, send gifts.
//
// Layout (mobile first; docs/pages.md has the picture). Mount points other scripts use:
//   #stage           the stream's stage (where the video would be: #stage-video)
//   #goal            the goal bar, on the stage (engagement.js)
//   #battle          the battle split bar, on the stage (battle.js)
//   #overlay         on the stage: #combos (combo bubbles, above the battle), #celebration (big gifts, over it)
//   #pinned-box      pinned messages: fill #pinned, unhide the box (engagement.js)
//   #gift-message-slot  in the gift sheet, before the status line: a message input (engagement.js)
//   #settings-slot   in the header menu: a settings panel (spending.js)
// Live-room handlers are one object passed to `new G.LiveRoom(id, handlers)` in join():
// a feature wraps it (`G.engage.wrap(handlers, ...)`, `G.battle.hook(handlers, ...)`).
//
// Spending: a gift is selected, then sent with the Send button of the gift sheet, which
// shows the price for the chosen count; a send above the configured cost
// (/v1/config confirm_gift_coins, 1,000 by default) asks for a confirmation first.
// The idempotency key is made once per send, when the user acts.
"use strict";
(() => {
  const { $, el, api, key, params, coins, cash } = G;
  let me = null;
  let room = null;
  let streamId = null;
  let battle = null; // the LIVE Match panel (battle.js)
  let catalog = [];
  let selected = null; // the gift picked in the sheet
  let confirmAbove = 1000;
  let sending = false;
  const shown = new Set(); // gift seqs in the feed: belt and braces against a repeat
  const phone = window.matchMedia("(max-width: 999px)");

  function say(text, kind) {
    const m = $("#message");
    m.textContent = text;
    m.className = "message " + (kind || "");
  }

  // Answers can arrive out of order: a balance read older than the last one shown is dropped.
  let balanceGen = 0;
  async function refreshBalance() {
    const gen = ++balanceGen;
    const w = await api("GET", "/v1/wallet");
    if (gen === balanceGen) setBalance(w.coins);
  }

  function setBalance(n) {
    for (const b of [$("#balance"), $("#sheet-balance")]) {
      b.textContent = coins(n);
      b.dataset.coins = String(n);
      b.classList.toggle("negative", n < 0);
    }
    updatePrice();
  }

  function setViewers(n) {
    $("#viewers").textContent = coins(n);
    $("#viewers").dataset.count = String(n);
    $("#viewers-label").textContent = n === 1 ? "viewer" : "viewers";
  }

  async function loadStreams() {
    const { streams } = await api("GET", "/v1/streams?status=live");
    const list = $("#streams");
    list.replaceChildren(...streams.map((s) => el("li", { class: s.id === streamId ? "active" : "" },
      el("a", { href: `?stream=${encodeURIComponent(s.id)}`, dataset: { stream: s.id },
                "aria-current": s.id === streamId ? "true" : "false",
                onclick: (ev) => { ev.preventDefault(); join(s.id); } },
        el("b", {}, s.title), el("span", { class: "sub" }, `${s.creator_id} · ${G.plural(s.viewers, "viewer", "viewers")}`)))));
    if (!streams.length) list.replaceChildren(el("li", { class: "empty" }, "Nobody is live right now."));
    return streams;
  }

  // ---- the gift sheet ---------------------------------------------------------------
  function openSheet(open) {
    document.body.classList.toggle("sheet-open", open);
    $("#open-sheet").setAttribute("aria-expanded", String(open));
    if (open && phone.matches) ($("#catalog button[aria-pressed=true]") || $("#catalog button") || $("#sheet-close")).focus();
    if (!open && phone.matches) $("#open-sheet").focus();
  }

  function showPacks(open) {
    $("#packs-box").hidden = !open;
    $("#recharge").setAttribute("aria-expanded", String(open));
  }

  async function loadCatalog() {
    const [{ gifts }, { packs }] = await Promise.all([api("GET", "/v1/gifts"), api("GET", "/v1/coin-packs")]);
    catalog = gifts;
    G.rememberCatalog(gifts);
    $("#catalog").replaceChildren(...gifts.map((g) => el("button", {
      type: "button", class: "gift-btn tier" + g.tier, dataset: { gift: g.id }, "aria-pressed": "false",
      "aria-label": `${g.name}, ${coins(g.coins)} coins`, onclick: () => select(g) },
      G.icon(g.id, "gift-icon"), el("span", { class: "name" }, g.name),
      el("span", { class: "price" }, el("span", { class: "coin", "aria-hidden": "true" }, "●"), " " + coins(g.coins)))));
    $("#packs").replaceChildren(...packs.map((p) => el("button", {
      type: "button", class: "pack", dataset: { pack: p.id }, onclick: (ev) => buy(p, ev.currentTarget) },
      el("b", {}, el("span", { class: "coin", "aria-hidden": "true" }, "●"), " " + coins(p.coins)), el("span", {}, cash(p.price)))));
  }

  function select(g) {
    selected = g;
    for (const b of document.querySelectorAll("#catalog button")) {
      b.setAttribute("aria-pressed", String(b.dataset.gift === g.id));
    }
    updatePrice();
  }

  function total() { return selected ? selected.coins * Number($("#count").value) : 0; }

  function updatePrice() {
    const price = $("#price"), send = $("#send");
    if (!selected) {
      price.textContent = "Pick a gift";
      send.disabled = true;
      send.textContent = "Send";
      return;
    }
    const count = Number($("#count").value), cost = total();
    const balance = Number($("#balance").dataset.coins || 0);
    price.replaceChildren(`${selected.name}${count > 1 ? " ×" + count : ""} = `,
      el("b", { class: cost > balance ? "short" : "" }, `${coins(cost)} coins`));
    price.dataset.coins = String(cost);
    send.disabled = sending;
    send.textContent = `Send · ${coins(cost)}`;
  }

  // Resolves true when the user confirms a costly send (Enter/Escape work as in any dialog).
  function confirmSend(g, count, cost) {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = `${g.name}${count > 1 ? " ×" + count : ""} costs ${coins(cost)} coins.`;
    $("#confirm-ok").textContent = `Send ${coins(cost)} coins`;
    return new Promise((resolve) => {
      const done = (ok) => { dialog.onclose = null; if (dialog.open) dialog.close(); resolve(ok); };
      $("#confirm-ok").onclick = () => done(true);
      $("#confirm-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      $("#confirm-cancel").focus(); // the safe choice has the focus
    });
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
          if (p.status === "succeeded") showPacks(false);
          return;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      await refreshBalance();
      say(Number($("#balance").dataset.coins) > before ? "Coins added" : "Payment still pending…");
    } catch (e) {
      say(Spending.explain(e) || e.message, "bad");
    } finally {
      button.disabled = false;
    }
  }

  async function send() {
    if (!selected || sending) return;
    const g = selected, count = Number($("#count").value), cost = g.coins * count;
    if (cost > confirmAbove && !(await confirmSend(g, count, cost))) { say("Not sent."); return; }
    sending = true;
    updatePrice();
    try {
      await sendGift(g, count);
    } finally {
      sending = false;
      updatePrice();
    }
  }

  async function sendGift(g, count) {
    if (!streamId) { say("Pick a live stream first.", "bad"); return; }
    const k = key("gift"); // once per send: a retry below reuses it
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
      balanceGen++;
      setBalance(res.balance);
      say(`You sent ${g.name}${count > 1 ? " ×" + count : ""}`, "ok");
      Spending.refresh().catch(() => {});
    } catch (e) {
      const text = Spending.explain(e) || { insufficient_funds: "Not enough coins: recharge.", wallet_in_debt: "Your wallet is in debt.",
                     self_gift: "You cannot gift your own stream.", stream_not_live: "This stream has ended.",
                     rate_limited: "Slow down a little.", blocked: "The creator does not take your gifts.",
                     gifts_paused: "The creator has paused gifts.",
                     message_not_allowed: "A message needs a bigger gift." }[e.code] || e.message;
      say(text, "bad");
      if (e.code === "insufficient_funds") showPacks(true);
    }
  }

  // ---- the room -----------------------------------------------------------------------
  function addGift(g) {
    if (shown.has(g.seq)) return;
    shown.add(g.seq);
    G.feedAdd($("#feed"), G.giftItem(g, me.id));
    G.celebrate(g);
    G.comboBubble(g);
    if (g.sender.id === me.id && !sending) refreshBalance().catch(() => {}); // sent from another tab or device
    const n = Number($("#room-coins").dataset.coins || 0) + g.coins;
    $("#room-coins").textContent = coins(n);
    $("#room-coins").dataset.coins = String(n);
  }

  function setRoomCoins(n) {
    $("#room-coins").textContent = coins(n);
    $("#room-coins").dataset.coins = String(n);
  }

  async function loadRoomState() {
    const [{ stream }, { top }] = await Promise.all([
      api("GET", `/v1/streams/${encodeURIComponent(streamId)}`),
      api("GET", `/v1/streams/${encodeURIComponent(streamId)}/leaderboard?limit=10`)]);
    $("#room-title").textContent = stream.title;
    $("#room-creator").textContent = stream.status === "live" ? stream.creator_id : `${stream.creator_id} · ended`;
    $("#stage-initial").textContent = (stream.creator_id || "?").slice(0, 1).toUpperCase();
    $("#stage").dataset.status = stream.status;
    setViewers(stream.viewers);
    setRoomCoins(stream.coins_received);
    G.renderTop($("#top"), top, me.id);
    return stream;
  }

  async function join(id) {
    if (room) room.close();
    streamId = String(id);
    shown.clear();
    $("#feed").replaceChildren();
    G.feedEmpty($("#feed"));
    history.replaceState(null, "", `?stream=${encodeURIComponent(streamId)}`);
    document.querySelectorAll("#streams li").forEach((li) => {
      const on = li.querySelector("a")?.dataset.stream === streamId;
      li.classList.toggle("active", on);
      li.querySelector("a")?.setAttribute("aria-current", String(on));
    });
    try {
      const stream = await loadRoomState();
      if (stream.status !== "live") { say("This stream has ended.", "bad"); return; }
    } catch (e) {
      say(e.message, "bad");
      return;
    }
    battle = battle || new G.battle.BattlePanel($("#battle"), { streamId: () => streamId, me: () => me.id, creator: false });
    battle.b = null;
    battle.render();
    const handlers = {
      status: (s) => { $("#conn").textContent = s; $("#conn").dataset.state = s; },
      reset: (welcome, missed) => {
        setRoomCoins(welcome.stream.coins_received);
        if (missed) {
          $("#feed").prepend(el("li", { class: "gap" }, "Some gifts were missed while you were away."));
          loadRoomState().catch(() => {});
        }
      },
      welcome: (w) => setViewers(w.viewers),
      gift: addGift,
      viewers: (m) => setViewers(m.count),
      leaderboard: (m) => G.renderTop($("#top"), m.top, me.id),
      stream_ended: () => {
        say("The stream has ended.", "bad");
        $("#room-creator").textContent += " · ended";
        $("#stage").dataset.status = "ended";
      },
      ended: () => loadStreams().catch(() => {}),
      unauthorized: () => { G.signOut("viewer"); location.reload(); },
    };
    room = new G.LiveRoom(streamId, G.engage.wrap(G.battle.hook(handlers, battle), streamId, "viewer"));
    window.gifting = { room }; // for tests: room.drop() simulates a network drop
    await room.open();
  }

  async function start(user) {
    me = user;
    $("#sign-in").hidden = true;
    $("#app").hidden = false;
    $("#me").hidden = false;
    $("#bottombar").hidden = false;
    $("#me-name").textContent = user.name;
    const cfg = await G.getConfig();
    if (Number.isInteger(cfg.confirm_gift_coins)) confirmAbove = cfg.confirm_gift_coins;
    $("#count").onchange = updatePrice;
    $("#send").onclick = send;
    $("#open-sheet").onclick = () => openSheet(true);
    $("#balance-btn").onclick = () => { openSheet(true); showPacks(true); };
    $("#sheet-close").onclick = () => openSheet(false);
    $("#recharge").onclick = () => showPacks($("#packs-box").hidden);
    // a tap outside the open sheet (on a phone) closes it
    document.addEventListener("click", (ev) => {
      if (!phone.matches || !document.body.classList.contains("sheet-open") || $("#confirm").open) return;
      if (!ev.target.closest("#sheet, #open-sheet, #balance-btn, #confirm")) openSheet(false);
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && document.body.classList.contains("sheet-open") && !$("#confirm").open) openSheet(false);
    });
    await Promise.all([loadCatalog(), refreshBalance(), Spending.start(user)]);
    const streams = await loadStreams();
    const wanted = params.get("stream") || (streams[0] && streams[0].id);
    if (wanted) await join(wanted);
    else G.feedEmpty($("#feed"));
    setInterval(() => loadStreams().catch(() => {}), 5000);
  }

  G.boot("viewer", start).catch((e) => { document.body.prepend(el("p", { class: "message bad" }, e.message)); });
})();
