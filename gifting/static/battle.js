// LIVE Match on both pages: the split bar, both scores, the countdown, each side's top gifters, the result;
// on the dashboard also inviting a live creator and answering an invitation.
// A battle message carries the whole state: the panel replaces what it holds, never shows an older
// version, and never lets a score on screen go down.
"use strict";
(() => {
  const { el, api, coins } = G;

  function clock(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  class BattlePanel {
    // box: an empty element; opts: {streamId: () => id, me: () => user id, creator: bool}
    constructor(box, opts) {
      this.box = box;
      this.opts = opts;
      this.b = null;
      this.live = [];
      box.classList.add("battle");
      setInterval(() => this.tick(), 250);
      this.render();
    }

    show(b) {
      if (!b) return;
      const cur = this.b;
      if (cur && cur.id === b.id) {
        if ((b.version || 0) < (cur.version || 0)) return; // older: keep ours
        if (b.status === "live") b.sides.forEach((s, i) => { s.score = Math.max(s.score, cur.sides[i].score); });
      } else if (cur && Number(b.id) < Number(cur.id)) {
        return;
      }
      this.b = b;
      this.render();
    }

    gift(g) { // a counted gift raises its side at once (the next battle message confirms it)
      const b = this.b;
      if (!g.battle || !b || g.battle.id !== b.id || b.status !== "live") return;
      const side = b.sides.find((s) => s.stream_id === g.stream_id);
      if (side && g.battle.score > side.score) { side.score = g.battle.score; this.render(); }
    }

    tick() {
      const b = this.b;
      const c = this.box.querySelector(".countdown");
      if (!b || !c) return;
      if (b.status === "live") c.textContent = clock(Date.parse(b.ends_at) - Date.now());
      else if (b.status === "invited") c.textContent = clock(Date.parse(b.expires_at) - Date.now());
    }

    async act(action) {
      try {
        const { battle } = await api("POST", `/v1/battles/${encodeURIComponent(this.b.id)}/${action}`);
        this.show(battle);
      } catch (e) { this.say(e.code === "battle_not_open" ? "That invitation is no longer open." : e.message); }
    }

    async invite(opponent, duration) {
      try {
        const { battle } = await api("POST", "/v1/battles", {
          opponent_creator_id: opponent, duration_s: duration, idempotency_key: "battle-" + Date.now() + "-" + Math.random() });
        this.show(battle);
      } catch (e) {
        this.say({ already_in_battle: "One of you is already in a battle.", stream_not_live: "That creator is not live.",
                   forbidden: "You cannot battle yourself." }[e.code] || e.message);
      }
    }

    say(text) { const m = this.box.querySelector(".battle-msg"); if (m) m.textContent = text; }

    async loadLive() {
      try {
        const { streams } = await api("GET", "/v1/streams?status=live&limit=100");
        this.live = streams.filter((s) => s.creator_id !== this.opts.me());
      } catch (e) { this.live = []; }
      if (!this.b || !["invited", "live"].includes(this.b.status)) this.render();
    }

    sideView(b, i) {
      const s = b.sides[i];
      const mine = s.stream_id === String(this.opts.streamId());
      return el("div", { class: "side-" + i + (mine ? " mine" : ""), dataset: { creator: s.creator_id } },
        el("div", { class: "who" }, s.creator_id + (mine ? " (this room)" : "")),
        el("b", { class: "score", dataset: { score: String(s.score) } }, coins(s.score)),
        el("ol", { class: "battle-top" }, ...s.top.map((t) => el("li", {}, `${t.name || t.user_id} · ${coins(t.coins)}`))));
    }

    render() {
      const b = this.b;
      const me = this.opts.me();
      const nodes = [el("h2", {}, "LIVE Match")];
      const open = b && ["invited", "live"].includes(b.status);
      if (b && (b.status === "live" || b.status === "ended")) {
        const [a, o] = b.sides;
        const total = a.score + o.score;
        const pct = total ? Math.round((a.score / total) * 1000) / 10 : 50;
        nodes.push(el("div", { class: "bar" }, el("span", { class: "fill-0", style: `width:${pct}%` }),
                      el("span", { class: "fill-1", style: `width:${100 - pct}%` })));
        nodes.push(el("div", { class: "sides" }, this.sideView(b, 0),
                      el("div", { class: "mid" }, b.status === "live" ? el("span", { class: "countdown" }, "")
                        : el("span", { class: "result" }, b.winner_creator_id ? `${b.winner_creator_id} wins` : "Draw")),
                      this.sideView(b, 1)));
      } else if (b && b.status === "invited") {
        const [a, o] = b.sides;
        if (this.opts.creator && o.creator_id === me) {
          nodes.push(el("p", { class: "invite" }, `${a.creator_id} challenges you to a ${Math.round(b.duration_s / 60)}-minute battle `,
                        el("span", { class: "countdown" }, "")),
                     el("button", { class: "accept", onclick: () => this.act("accept") }, "Accept"), " ",
                     el("button", { class: "decline danger", onclick: () => this.act("decline") }, "Decline"));
        } else {
          nodes.push(el("p", { class: "invite" }, `Waiting for ${o.creator_id} to accept… `, el("span", { class: "countdown" }, "")));
          if (this.opts.creator && a.creator_id === me) {
            nodes.push(el("button", { class: "cancel danger", onclick: () => this.act("cancel") }, "Cancel"));
          }
        }
      } else if (b) {
        nodes.push(el("p", { class: "sub" }, `The invitation was ${b.status}.`));
      }
      if (this.opts.creator && !open) {
        const who = el("input", { class: "opponent", placeholder: "creator id", maxlength: "64" });
        const dur = el("select", { class: "duration" }, ...[60, 180, 300, 600, 900].map((s) =>
          el("option", s === 300 ? { value: String(s), selected: "" } : { value: String(s) }, `${s / 60} min`)));
        nodes.push(el("form", { class: "invite-form", onsubmit: (ev) => { ev.preventDefault(); this.invite(who.value.trim(), Number(dur.value)); } },
          who, dur, el("button", { type: "submit" }, "Invite")));
        if (this.live.length) {
          nodes.push(el("div", { class: "live-list" }, el("span", { class: "sub" }, "Live now: "),
            ...this.live.slice(0, 8).map((s) => el("button", { class: "link", dataset: { creator: s.creator_id },
                                                               onclick: () => { who.value = s.creator_id; } }, s.creator_id))));
        }
      }
      nodes.push(el("p", { class: "battle-msg message" }, ""));
      this.box.dataset.status = b ? b.status : "none";
      this.box.dataset.battle = b ? b.id : "";
      this.box.hidden = !this.opts.creator && !(b && (b.status === "live" || b.status === "ended"));
      this.box.replaceChildren(...nodes);
      this.tick();
    }
  }

  // Wraps a LiveRoom's handlers so the panel sees welcome, battle and gift messages.
  function hook(handlers, panel) {
    const wrap = (name, f) => {
      const orig = handlers[name];
      handlers[name] = (m) => { f(m); if (orig) orig(m); };
    };
    wrap("welcome", (w) => { if (w.battle) panel.show(w.battle); });
    wrap("battle", (m) => panel.show(m.battle));
    wrap("gift", (g) => panel.gift(g));
    return handlers;
  }

  G.battle = { BattlePanel, hook };
})();
