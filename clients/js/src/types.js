// The contract's shapes (v1, and v2 fields that a newer server adds), as JSDoc types.
// Every v2 field is optional: a v1 server omits it, a v2 server sends it or null.

/**
 * @typedef {{ amount: number, currency: string }} Money
 * @typedef {{ id: string, name: string | null }} Sender
 * @typedef {{ id: string, count: number }} Combo
 * @typedef {{ id: string, progress_coins: number, target_coins: number, reached: boolean }} GoalProgress
 * @typedef {{ id: string, score: number }} BattleScore
 * @typedef {{
 *   id: string, stream_id: string, seq: number, sender: Sender,
 *   gift: { id: string, name: string, coins: number }, count: number, coins: number, created_at: string,
 *   combo?: Combo | null, goal?: GoalProgress | null, battle?: BattleScore | null,
 *   message?: string | null, pinned_until?: string | null, message_hidden?: boolean | null
 * }} GiftEvent
 * @typedef {{
 *   id: string, stream_id: string, title: string, target_coins: number, gift_id: string | null,
 *   progress_coins: number, status: "active" | "reached" | "cleared", created_at: string, reached_at: string | null
 * }} Goal
 * @typedef {{ user_id: string, name: string | null, coins: number }} TopEntry
 * @typedef {{ creator_id: string, stream_id: string, score: number, top: TopEntry[] }} BattleSide
 * @typedef {{
 *   id: string, status: "invited" | "live" | "ended" | "declined" | "cancelled" | "expired",
 *   duration_s: number, created_at: string, starts_at: string | null, ends_at: string | null,
 *   sides: BattleSide[], winner_creator_id: string | null, ended_reason: "time" | "stream_ended" | null
 * }} Battle
 * @typedef {{
 *   id: string, creator_id: string, title: string, status: "live" | "ended", started_at: string,
 *   ended_at: string | null, viewers: number, coins_received: number,
 *   goal?: Goal | null, gifts_paused?: boolean, battle_id?: string | null
 * }} Stream
 * @typedef {{ id: string, name: string, coins: number, tier: number }} CatalogGift
 * @typedef {{ id: string, coins: number, price: Money }} CoinPack
 * @typedef {{ id: string, pack_id: string, coins: number, price: Money, status: "pending" | "succeeded" | "failed" | "refunded" | "disputed" | string,
 *   created_at?: string }} Purchase
 * @typedef {{ provider: "external" | "sandbox" | string, [key: string]: unknown }} Checkout
 * @typedef {{ user_id: string, coins: number, limits?: unknown, self_excluded_until?: string | null }} Wallet
 * @typedef {{ stream_coins: number, unsettled_coins: number }} Earnings
 */

// ---- server -> client messages: one type per message -----------------------------------

/**
 * @typedef {{ type: "welcome", stream: Stream, user: { id: string, role: string }, seq: number, viewers: number,
 *   recovered: boolean | null, goal?: Goal | null, battle?: Battle | null, pinned?: GiftEvent[] }} WelcomeMessage
 * @typedef {{ type: "gift", seq: number, gift: GiftEvent }} GiftMessage
 * @typedef {{ type: "ack", ref: string | number, gift: GiftEvent, balance: number }} AckMessage
 * @typedef {{ type: "error", ref: string | number | null, code: string, message: string,
 *   details?: { [key: string]: unknown } }} ErrorMessage
 * @typedef {{ type: "viewers", count: number }} ViewersMessage
 * @typedef {{ type: "earnings", stream_coins: number, unsettled_coins: number }} EarningsMessage
 * @typedef {{ type: "leaderboard", top: TopEntry[] }} LeaderboardMessage
 * @typedef {{ type: "stream_ended", stream: Stream }} StreamEndedMessage
 * @typedef {{ type: "pong", ref: string | number }} PongMessage
 * @typedef {{ type: "authed", ref?: string | number | null, expires_at: number }} AuthedMessage
 * @typedef {{ type: "goal", goal: Goal | null }} GoalMessage
 * @typedef {{ type: "stream", stream: Stream }} StreamMessage
 * @typedef {{ type: "battle", battle: Battle | null }} BattleMessage
 * @typedef {{ type: "message_hidden", gift_id: string, seq: number }} MessageHiddenMessage
 * @typedef {WelcomeMessage | GiftMessage | AckMessage | ErrorMessage | ViewersMessage | EarningsMessage
 *   | LeaderboardMessage | StreamEndedMessage | PongMessage | AuthedMessage | GoalMessage | StreamMessage
 *   | BattleMessage | MessageHiddenMessage} ServerMessage
 */

export {};
