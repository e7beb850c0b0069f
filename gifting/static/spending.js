// The viewer page's responsible-spending panel: the user's daily and weekly
// limits, what they spent so far, a raise waiting out its cooling-off, taking
// a break (self-exclusion), and why a minor cannot buy or gift. The limits are
// enforced by the wallet in the gift's own transaction; this only shows and
// asks. Everything user-provided goes into the page with textContent.
"use strict";
const Spending = (() => {
  const { $, api, coins } = G;
  let me = null;

  function when(t) {
    return new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function limitText(n) { return n === null || n === undefined ? "no limit" : coins(n) + " coins"; }

  function render(w) {
    const l = w.limits;
    $("#spent-today").textContent = coins(l.spent_today);
    $("#spent-week").textContent = coins(l.spent_this_week);
    $("#spent-today").dataset.coins = String(l.spent_today);
    $("#daily-limit").textContent = limitText(l.daily_coins);
    $("#weekly-limit").textContent = limitText(l.weekly_coins);
    $("#spending").dataset.daily = l.daily_coins === null ? "" : String(l.daily_coins);
    const pending = $("#limits-pending");
    pending.hidden = !l.pending;
    if (l.pending) {
      pending.textContent = `Waiting to apply on ${when(l.pending.effective_at)}: daily ${limitText(l.pending.daily_coins)},`
        + ` weekly ${limitText(l.pending.weekly_coins)}.`;
    }
    const excluded = $("#excluded-note");
    excluded.hidden = !w.self_excluded_until;
    $("#spending").dataset.excluded = w.self_excluded_until ? "yes" : "no";
    if (w.self_excluded_until) {
      excluded.textContent = `You are taking a break from buying and gifting until ${when(w.self_excluded_until)}.`
        + " It can be extended, never shortened.";
    }
  }

  async function refresh() {
    render(await api("GET", "/v1/wallet"));
  }

  function say(text, kind) {
    const m = $("#spending-message");
    m.textContent = text;
    m.className = "message " + (kind || "");
  }

  function asked(input) {
    const v = input.value.trim();
    return v === "" ? null : Number(v);
  }

  async function saveLimits(ev) {
    ev.preventDefault();
    try {
      const { limits } = await api("PUT", "/v1/wallet/limits",
                                   { daily_coins: asked($("#limit-daily")), weekly_coins: asked($("#limit-weekly")) });
      await refresh();
      say(limits.pending ? "Saved. A higher limit, or removing one, waits out its cooling-off." : "Saved.", "ok");
    } catch (e) { say(e.message, "bad"); }
  }

  async function exclude(ev) {
    ev.preventDefault();
    const days = Number($("#exclude-days").value);
    const until = new Date(Date.now() + days * 86400000 + 60000).toISOString();
    if (!confirm(`No buying and no gifts until ${when(until)}? This cannot be undone or shortened.`)) return;
    try {
      await api("POST", "/v1/wallet/self-exclusion", { until });
      await refresh();
      say("Your break has started.", "ok");
    } catch (e) { say(e.message, "bad"); }
  }

  // Why a refused gift or purchase was refused, in words a user can act on (null: not ours).
  function explain(e) {
    const d = e.details || {};
    if (e.code === "spending_limit") {
      refresh().catch(() => {});
      return `That would pass your ${d.limit} limit: ${coins(d.remaining_coins)} coins left until ${when(d.resets_at)}.`;
    }
    if (e.code === "age_restricted") {
      return "Buying coins and sending gifts need a verified adult (18+) account.";
    }
    if (e.code === "self_excluded") {
      refresh().catch(() => {});
      return "You are taking a break from buying and gifting" + (d.self_excluded_until ? ` until ${when(d.self_excluded_until)}.` : ".");
    }
    return null;
  }

  async function start(user) {
    me = user;
    $("#age-note").hidden = me.adult !== false;
    $("#limits-form").onsubmit = saveLimits;
    $("#exclude-form").onsubmit = exclude;
    await refresh();
  }

  return { start, refresh, explain };
})();
