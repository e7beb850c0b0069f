// Goals, combos, paid messages and moderation on both pages. Loaded after app.js;
// the pages hook in with G.engage.wrap(handlers, role) around their live-room
// handlers. Every number shown here was decided by the commit and arrives on a
// gift (goal progress, combo count, pin end) or as a whole-state message
// (goal, stream, message_hidden): nothing is counted in the browser.
// Text is data: user text only ever goes in with textContent (G.el), never as HTML.
"use strict";
G.engage = (() => {
  const { $, el, api, coins } = G;
  let goal = null; // the current Goal
  let streamId = null;
  let role = "viewer";
  const pinned = new Map(); // gift id -> GiftEvent
  const hidden = new Set(); // gift ids whose message was hidden
  const bubbles = new Map(); // combo id -> {node, timer}
  const BUBBLE_MS = 3500;

  // ---- the goal bar -----------------------------------------------------------------
  function renderGoal() {
    const box = $("#goal");
    if (!box) return;
    box.hidden = !goal;
    if (!goal) { box.dataset.goalId = ""; return; }
    const pct = Math.min(100, Math.floor(goal.progress_coins * 100 / goal.target_coins));
    box.dataset.goalId = goal.id;
    box.dataset.progress = String(goal.progress_coins);
    box.dataset.status = goal.status;
    box.classList.toggle("reached", goal.status === "reached");
    box.replaceChildren(
      el("div", { class: "goal-head" }, el("b", { class: "goal-title" }, goal.title),
        el("span", { class: "goal-count" }, `${coins(goal.progress_coins)} / ${coins(goal.target_coins)}`),
        goal.status === "reached" ? el("span", { class: "goal-done" }, "Goal reached!") : ""),
      el("div", { class: "goal-track" }, el("div", { class: "goal-fill", style: `width:${pct}%` })));
  }

  function setGoal(g) {
    goal = g && g.status !== "cleared" ? { ...g } : null;
    renderGoal();
    const form = $("#goal-form");
    if (form) $("#goal-clear").disabled = !goal;
  }

  function goalFromGift(g) {
    // A gift carries the progress after it, for the goal it counted toward. One for an
    // older goal (delivered after the new goal's message) changes nothing.
    if (!g.goal || !goal || g.goal.id !== goal.id) return;
    if (g.goal.progress_coins < goal.progress_coins) return; // an older gift, replayed
    goal.progress_coins = g.goal.progress_coins;
    if (g.goal.reached) { goal.status = "reached"; goal.reached_at = g.created_at; }
    renderGoal();
  }

  // ---- combos: one growing bubble per combo id ---------------------------------------
  function combo(g) {
    const box = $("#combos");
    if (!box || !g.combo) return;
    let b = bubbles.get(g.combo.id);
    if (!b) {
      const node = el("div", { class: "combo", dataset: { comboId: g.combo.id, sender: g.sender.id } },
        el("span", { class: "who" }, g.sender.name || g.sender.id),
        el("span", { class: "what" }, g.gift.name), el("b", { class: "times" }, ""));
      b = { node, timer: 0, count: 0 };
      bubbles.set(g.combo.id, b);
      box.prepend(node);
    }
    if (g.combo.count < b.count) return; // replayed: the bubble already shows more
    b.count = g.combo.count;
    b.node.dataset.count = String(g.combo.count);
    b.node.querySelector(".times").textContent = "×" + g.combo.count;
    b.node.classList.remove("pop");
    void b.node.offsetWidth; // restart the animation
    b.node.classList.add("pop");
    clearTimeout(b.timer);
    b.timer = setTimeout(() => { b.node.remove(); bubbles.delete(g.combo.id); }, BUBBLE_MS);
  }

  // ---- pinned messages ---------------------------------------------------------------
  function renderPinned() {
    const list = $("#pinned");
    if (!list) return;
    const now = Date.now();
    for (const [id, g] of pinned) if (Date.parse(g.pinned_until) <= now || hidden.has(id)) pinned.delete(id);
    const items = [...pinned.values()].sort((a, b) => b.coins - a.coins || a.seq - b.seq);
    list.replaceChildren(...items.map((g) => {
      const left = Math.max(0, Math.round((Date.parse(g.pinned_until) - now) / 1000));
      const mm = Math.floor(left / 60), ss = String(left % 60).padStart(2, "0");
      const li = el("li", { class: "pin", dataset: { giftId: g.id, seq: String(g.seq) } },
        el("span", { class: "who" }, g.sender.name || g.sender.id),
        el("span", { class: "amount" }, coins(g.coins)),
        el("span", { class: "left", title: "pinned for" }, `${mm}:${ss}`),
        el("p", { class: "msg" }, g.message));
      if (role === "creator") li.append(hideButton(g));
      return li;
    }));
    list.closest("section, div").hidden = !items.length && role !== "creator";
  }

  function pinGift(g) {
    if (g.message && g.pinned_until && !g.message_hidden && !hidden.has(g.id)) {
      pinned.set(g.id, g);
      renderPinned();
    }
  }

  // ---- messages in the feed ----------------------------------------------------------
  function decorate(g) {
    const li = document.querySelector(`#feed li[data-seq="${g.seq}"]`);
    if (!li || li.dataset.decorated) return;
    li.dataset.decorated = "1";
    if (g.combo && g.combo.count > g.count) li.append(el("span", { class: "combo-tag" }, "combo ×" + g.combo.count));
    if (g.message || g.message_hidden) {
      const gone = g.message_hidden || hidden.has(g.id);
      li.append(el("p", { class: "msg" + (gone ? " hidden-msg" : "") }, gone ? "message hidden" : g.message));
      if (role === "creator" && !gone) li.append(hideButton(g));
    }
    if (role === "creator") {
      li.append(el("button", { class: "link block-btn", dataset: { user: g.sender.id },
                               onclick: () => block(g.sender.id) }, "block"));
    }
  }

  function hideMessage(giftId, seq) {
    hidden.add(giftId);
    pinned.delete(giftId);
    renderPinned();
    const li = document.querySelector(`#feed li[data-seq="${seq}"]`);
    const msg = li && li.querySelector(".msg");
    if (msg) { msg.textContent = "message hidden"; msg.classList.add("hidden-msg"); }
    if (li) li.querySelectorAll(".hide-btn").forEach((b) => b.remove());
  }

  // ---- creator actions ------------------------------------------------------------------
  const say = (text, kind) => { const m = $("#message"); if (m) { m.textContent = text; m.className = "message " + (kind || ""); } };

  function hideButton(g) {
    return el("button", { class: "link hide-btn", dataset: { giftId: g.id }, onclick: async () => {
      try {
        await api("POST", `/v1/streams/${encodeURIComponent(streamId)}/gifts/${encodeURIComponent(g.id)}/hide`);
        hideMessage(g.id, g.seq);
      } catch (e) { say(e.message, "bad"); }
    } }, "hide");
  }

  async function block(userId) {
    try {
      await api("PUT", `/v1/creators/me/blocks/${encodeURIComponent(userId)}`);
      say(`${userId} is blocked from gifting you.`, "ok");
      await loadBlocks();
    } catch (e) { say(e.message, "bad"); }
  }

  async function loadBlocks() {
    const list = $("#blocks");
    if (!list) return;
    const { items } = await api("GET", "/v1/creators/me/blocks?limit=200");
    list.replaceChildren(...items.map((b) => el("li", { dataset: { user: b.user_id } },
      el("span", { class: "who" }, b.user_id),
      el("button", { class: "link", onclick: async () => {
        try { await api("DELETE", `/v1/creators/me/blocks/${encodeURIComponent(b.user_id)}`); await loadBlocks(); }
        catch (e) { say(e.message, "bad"); }
      } }, "unblock"))));
    if (!items.length) list.replaceChildren(el("li", { class: "empty" }, "Nobody is blocked."));
  }

  function setPaused(paused) {
    const btn = $("#pause");
    if (btn) { btn.dataset.paused = String(!!paused); btn.textContent = paused ? "Resume gifts" : "Pause gifts"; }
    const note = $("#paused-note");
    if (note) note.hidden = !paused;
  }

  function decorateTop() {
    if (role !== "creator") return;
    document.querySelectorAll("#top li[data-user]").forEach((li) => {
      if (li.querySelector(".block-btn")) return;
      li.append(el("button", { class: "link block-btn", dataset: { user: li.dataset.user },
                               onclick: () => block(li.dataset.user) }, "block"));
    });
  }

  // ---- the panels each page gets ----------------------------------------------------------
  function mount(where) {
    if ($("#engage")) return;
    const feed = $("#feed");
    const panel = el("div", { id: "engage", class: "engage" },
      el("div", { id: "goal", class: "goal", hidden: "" }),
      el("div", { id: "combos", class: "combos", "aria-live": "polite" }),
      el("section", { class: "pinned-box", hidden: "" }, el("h3", {}, "Pinned"), el("ol", { id: "pinned", class: "pinned" })));
    feed.before(panel);
    if (where === "viewer") {
      const head = document.querySelector(".catalog-head");
      head.after(el("label", { class: "gift-message" }, "Message ",
        el("input", { id: "gift-message", maxlength: "200", autocomplete: "off",
                      placeholder: "Say something with a gift of 100+ coins" })));
    } else {
      const control = document.querySelector("section.control");
      control.after(el("section", { class: "card room-controls", id: "room-controls" },
        el("h2", {}, "Room"),
        el("form", { id: "goal-form", class: "goal-form" },
          el("input", { id: "goal-title", placeholder: "Goal, e.g. New microphone", maxlength: "80", required: "" }),
          el("input", { id: "goal-target", type: "number", min: "1", max: "1000000000", placeholder: "coins", required: "" }),
          el("button", { type: "submit", id: "goal-set" }, "Set goal"),
          el("button", { type: "button", id: "goal-clear", disabled: "" }, "Clear goal")),
        el("div", { class: "pause-row" },
          el("button", { type: "button", id: "pause", dataset: { paused: "false" } }, "Pause gifts"),
          el("span", { id: "paused-note", class: "sub", hidden: "" }, "Gifts are paused.")),
        el("h3", {}, "Blocked"), el("ul", { id: "blocks", class: "blocks" })));
      $("#goal-form").onsubmit = async (ev) => {
        ev.preventDefault();
        try {
          const { goal: g } = await api("PUT", `/v1/streams/${encodeURIComponent(streamId)}/goal`,
            { title: $("#goal-title").value, target_coins: Number($("#goal-target").value) });
          setGoal(g);
          say("Goal set.", "ok");
        } catch (e) { say(e.message, "bad"); }
      };
      $("#goal-clear").onclick = async () => {
        try { await api("DELETE", `/v1/streams/${encodeURIComponent(streamId)}/goal`); setGoal(null); }
        catch (e) { say(e.message, "bad"); }
      };
      $("#pause").onclick = async () => {
        const paused = $("#pause").dataset.paused !== "true";
        try {
          const { stream } = await api("PUT", `/v1/streams/${encodeURIComponent(streamId)}/gifts-paused`, { paused });
          setPaused(stream.gifts_paused);
        } catch (e) { say(e.message, "bad"); }
      };
    }
  }

  let ticker = 0;

  // Wraps a page's live-room handlers: the page keeps its own, these are added.
  function wrap(h, id, who) {
    role = who;
    streamId = String(id);
    mount(who);
    goal = null; pinned.clear(); hidden.clear(); bubbles.clear();
    $("#combos").replaceChildren();
    renderGoal(); renderPinned();
    if (who === "creator") loadBlocks().catch(() => {});
    clearInterval(ticker);
    ticker = setInterval(renderPinned, 1000);
    const call = (f, m) => { if (f) f(m); };
    return { ...h,
      welcome: (w) => {
        call(h.welcome, w);
        setGoal(w.goal);
        setPaused(w.stream && w.stream.gifts_paused);
        for (const g of w.pinned || []) pinned.set(g.id, g);
        renderPinned();
      },
      gift: (g) => {
        call(h.gift, g);
        decorate(g);
        goalFromGift(g);
        combo(g);
        pinGift(g);
      },
      goal: (m) => { call(h.goal, m); setGoal(m.goal); },
      stream: (m) => { call(h.stream, m); setPaused(m.stream.gifts_paused); if ("goal" in m.stream) setGoal(m.stream.goal); },
      message_hidden: (m) => { call(h.message_hidden, m); hideMessage(m.gift_id, m.seq); },
      leaderboard: (m) => { call(h.leaderboard, m); decorateTop(); },
    };
  }

  // The viewer's message for the next gift (trimmed; null when empty).
  function message() {
    const input = $("#gift-message");
    const text = input ? input.value.trim() : "";
    return text ? text : null;
  }

  function sent() { const input = $("#gift-message"); if (input) input.value = ""; }

  return { wrap, message, sent, setGoal, decorateTop, state: () => ({ goal, pinned: [...pinned.keys()] }) };
})();
