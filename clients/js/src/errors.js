// One error class per contract error code (v1 and v2), all under GiftingError.
//
//   GiftingError                       code, status (HTTP, 0 over WebSocket), details, ref
//   ├── InsufficientFundsError         insufficient_funds
//   ├── SpendingLimitError             spending_limit (details: limit, remaining_coins, resets_at)
//   ├── … one class per code in CODES
//   ├── UnknownCodeError               a code this version does not know (a newer server)
//   ├── NetworkError                   no answer: the request may or may not have taken effect
//   └── OutcomeUnknownError            retries ran out with no answer; `idempotencyKey` replays it

/** @typedef {{ [key: string]: unknown }} Details */

export class GiftingError extends Error {
  /**
   * @param {string} code the contract's snake_case code
   * @param {string} message human text from the server
   * @param {{ status?: number, details?: Details | null, ref?: string | number | null }} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = new.target.name;
    /** @type {string} */
    this.code = code;
    /** HTTP status, or 0 for a WebSocket `error` message. */
    this.status = extra.status ?? 0;
    /** @type {Details | null} what a client can act on (e.g. a spending limit's remaining coins) */
    this.details = extra.details ?? null;
    /** @type {string | number | null} */
    this.ref = extra.ref ?? null;
  }

  /** True when the same request (same idempotency key) may be sent again. */
  get retryable() {
    return RETRYABLE.has(this.code);
  }
}

/** Codes whose request provably had no effect or was interrupted: a retry with the same key is safe. */
const RETRYABLE = new Set(["unavailable", "rate_limited", "internal_error", "network_error", "outcome_unknown"]);

// code -> class name. Each gets its own subclass so `instanceof` works and stack traces read well.
const CODES = /** @type {const} */ ({
  // v1
  invalid_json: "InvalidJsonError",
  invalid_request: "InvalidRequestError",
  unknown_type: "UnknownTypeError",
  unknown_field: "UnknownFieldError",
  invalid_value: "InvalidValueError",
  invalid_idempotency_key: "InvalidIdempotencyKeyError",
  unauthorized: "UnauthorizedError",
  forbidden: "ForbiddenError",
  not_found: "NotFoundError",
  method_not_allowed: "MethodNotAllowedError",
  payload_too_large: "PayloadTooLargeError",
  unsupported_media_type: "UnsupportedMediaTypeError",
  insufficient_funds: "InsufficientFundsError",
  wallet_in_debt: "WalletInDebtError",
  self_gift: "SelfGiftError",
  unknown_gift: "UnknownGiftError",
  unknown_stream: "UnknownStreamError",
  unknown_pack: "UnknownPackError",
  unknown_purchase: "UnknownPurchaseError",
  stream_not_live: "StreamNotLiveError",
  already_live: "AlreadyLiveError",
  idempotency_conflict: "IdempotencyConflictError",
  invalid_count: "InvalidCountError",
  rate_limited: "RateLimitedError",
  invalid_signature: "InvalidSignatureError",
  amount_mismatch: "AmountMismatchError",
  history_is_settled: "HistoryIsSettledError",
  conflict: "ConflictError",
  unavailable: "UnavailableError",
  internal_error: "InternalError",
  invalid_cursor: "InvalidCursorError",
  invalid_event: "InvalidEventError",
  invalid_split: "InvalidSplitError",
  invalid_status: "InvalidStatusError",
  invalid_title: "InvalidTitleError",
  invalid_user_id: "InvalidUserIdError",
  invalid_role: "InvalidRoleError",
  unknown_creator: "UnknownCreatorError",
  // v2 (engagement and responsible spending)
  age_restricted: "AgeRestrictedError",
  blocked: "BlockedError",
  self_excluded: "SelfExcludedError",
  spending_limit: "SpendingLimitError",
  gifts_paused: "GiftsPausedError",
  already_in_battle: "AlreadyInBattleError",
  battle_not_open: "BattleNotOpenError",
  unknown_block: "UnknownBlockError",
  invalid_goal: "InvalidGoalError",
  invalid_message: "InvalidMessageError",
  message_not_allowed: "MessageNotAllowedError",
  invalid_duration: "InvalidDurationError",
  invalid_limit: "InvalidLimitError",
  invalid_until: "InvalidUntilError",
  // client side
  network_error: "NetworkError",
  outcome_unknown: "OutcomeUnknownError",
});

/** @typedef {keyof typeof CODES} ErrorCode */

/** @param {string} name */
function define(name) {
  const cls = { [name]: class extends GiftingError {} }[name];
  return /** @type {typeof GiftingError} */ (cls);
}

/** @type {Record<string, typeof GiftingError>} */
export const errorClasses = {};
for (const [code, name] of Object.entries(CODES)) errorClasses[code] = define(name);

export const InvalidJsonError = errorClasses.invalid_json;
export const InvalidRequestError = errorClasses.invalid_request;
export const UnknownTypeError = errorClasses.unknown_type;
export const UnknownFieldError = errorClasses.unknown_field;
export const InvalidValueError = errorClasses.invalid_value;
export const InvalidIdempotencyKeyError = errorClasses.invalid_idempotency_key;
export const UnauthorizedError = errorClasses.unauthorized;
export const ForbiddenError = errorClasses.forbidden;
export const NotFoundError = errorClasses.not_found;
export const MethodNotAllowedError = errorClasses.method_not_allowed;
export const PayloadTooLargeError = errorClasses.payload_too_large;
export const UnsupportedMediaTypeError = errorClasses.unsupported_media_type;
export const InsufficientFundsError = errorClasses.insufficient_funds;
export const WalletInDebtError = errorClasses.wallet_in_debt;
export const SelfGiftError = errorClasses.self_gift;
export const UnknownGiftError = errorClasses.unknown_gift;
export const UnknownStreamError = errorClasses.unknown_stream;
export const UnknownPackError = errorClasses.unknown_pack;
export const UnknownPurchaseError = errorClasses.unknown_purchase;
export const StreamNotLiveError = errorClasses.stream_not_live;
export const AlreadyLiveError = errorClasses.already_live;
export const IdempotencyConflictError = errorClasses.idempotency_conflict;
export const InvalidCountError = errorClasses.invalid_count;
export const RateLimitedError = errorClasses.rate_limited;
export const InvalidSignatureError = errorClasses.invalid_signature;
export const AmountMismatchError = errorClasses.amount_mismatch;
export const HistoryIsSettledError = errorClasses.history_is_settled;
export const ConflictError = errorClasses.conflict;
export const UnavailableError = errorClasses.unavailable;
export const InternalError = errorClasses.internal_error;
export const InvalidCursorError = errorClasses.invalid_cursor;
export const InvalidEventError = errorClasses.invalid_event;
export const InvalidSplitError = errorClasses.invalid_split;
export const InvalidStatusError = errorClasses.invalid_status;
export const InvalidTitleError = errorClasses.invalid_title;
export const InvalidUserIdError = errorClasses.invalid_user_id;
export const InvalidRoleError = errorClasses.invalid_role;
export const UnknownCreatorError = errorClasses.unknown_creator;
export const AgeRestrictedError = errorClasses.age_restricted;
export const BlockedError = errorClasses.blocked;
export const SelfExcludedError = errorClasses.self_excluded;
export const SpendingLimitError = errorClasses.spending_limit;
export const GiftsPausedError = errorClasses.gifts_paused;
export const AlreadyInBattleError = errorClasses.already_in_battle;
export const BattleNotOpenError = errorClasses.battle_not_open;
export const UnknownBlockError = errorClasses.unknown_block;
export const InvalidGoalError = errorClasses.invalid_goal;
export const InvalidMessageError = errorClasses.invalid_message;
export const MessageNotAllowedError = errorClasses.message_not_allowed;
export const InvalidDurationError = errorClasses.invalid_duration;
export const InvalidLimitError = errorClasses.invalid_limit;
export const InvalidUntilError = errorClasses.invalid_until;
export const NetworkError = errorClasses.network_error;

/** Retries ran out without an answer. The request may have taken effect: replay `idempotencyKey` to learn. */
export class OutcomeUnknownError extends GiftingError {
  /** @param {string} message @param {string} idempotencyKey */
  constructor(message, idempotencyKey) {
    super("outcome_unknown", message);
    this.idempotencyKey = idempotencyKey;
  }
}
errorClasses.outcome_unknown = OutcomeUnknownError;

/** A code this SDK version does not know (a newer server): still a GiftingError with its code. */
export class UnknownCodeError extends GiftingError {}

/**
 * The error object for a contract error body or WebSocket `error` message.
 * @param {string} code
 * @param {string} message
 * @param {{ status?: number, details?: Details | null, ref?: string | number | null }} [extra]
 * @returns {GiftingError}
 */
export function errorFor(code, message, extra) {
  const cls = Object.hasOwn(errorClasses, code) && code !== "outcome_unknown" ? errorClasses[code] : UnknownCodeError;
  return new cls(code, message, extra);
}
