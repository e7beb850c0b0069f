"""The OpenAPI 3.1 document for the HTTP API (served at ``GET /openapi.json``).

Written by hand from the client contract (docs/api.md), then checked against the code two
ways in the tests: every aiohttp route is in the document and every
documented operation is a route; schemathesis calls the real service with
generated requests and checks the answers against these schemas.

Schemas allow extra properties: the contract lets the service add fields.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ID: Schema = {"type": "string", "minLength": 1}
COINS: Schema = {"type": "integer", "minimum": 0}
NULLABLE_COINS: Schema = {"type": ["integer", "null"], "minimum": 0}
LIMIT_COINS: Schema = {"type": ["integer", "null"], "minimum": 0, "maximum": 10**12}


def text(max_len: int, min_len: int = 1) -> Schema:
    """A request string: no NUL (Postgres text cannot hold it), else 422. Lone surrogates are refused
    too (400), but a pattern cannot say so portably: not every regex engine takes a surrogate escape."""
    return {"type": "string", "minLength": min_len, "maxLength": max_len, "pattern": "^[^\\u0000]*$"}


# Text shown to people (titles, names): no C0/C1 control, no line/paragraph separator, no
# bidi override or isolate (see wallet/inputs.py), and not blank (one character that is
# neither one of those nor Python's whitespace).
_SHOWN = "[^\\u0000-\\u001f\\u007f-\\u009f\\u2028-\\u202e\\u2066-\\u2069]"
_NONBLANK = "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028-\\u202f\\u205f\\u2066-\\u2069\\u3000]"


def shown_text(max_len: int) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": f"^{_SHOWN}*{_NONBLANK}{_SHOWN}*$"}


IDEMPOTENCY_KEY: Schema = text(128)
USER_ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
CATALOG_ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}, "message": STR})}),
    "Money": obj({"amount": INT, "currency": {"type": "string", "enum": ["USD"]}}),
    "Gift": obj({"id": ID, "name": STR, "coins": {"type": "integer", "minimum": 1}, "tier": INT}),
    "CoinPack": obj({"id": ID, "coins": {"type": "integer", "minimum": 1}, "price": ref("Money")}),
    "Wallet": obj({"user_id": USER_ID, "coins": INT},
                  {"limits": ref("Limits"), "self_excluded_until": NULLABLE_TIME}),
    "Limits": obj({"daily_coins": NULLABLE_COINS, "weekly_coins": NULLABLE_COINS,
                   "pending": {"oneOf": [{"type": "null"},
                                         obj({"daily_coins": NULLABLE_COINS, "weekly_coins": NULLABLE_COINS,
                                              "effective_at": TIME},
                                             {"daily_effective_at": NULLABLE_TIME,
                                              "weekly_effective_at": NULLABLE_TIME})]},
                   "spent_today": COINS, "spent_this_week": COINS, "day_resets_at": TIME, "week_resets_at": TIME},
                  {"platform_daily_coins": NULLABLE_COINS, "platform_weekly_coins": NULLABLE_COINS}),
    "WalletTransaction": obj({"id": ID, "kind": STR, "coins": INT, "balance_after": INT, "created_at": TIME,
                              "ref": STR}),
    "Purchase": obj({"id": ID, "pack_id": ID, "coins": INT, "price": ref("Money"),
                     "status": {"type": "string", "enum": ["pending", "succeeded", "failed", "refunded",
                                                           "disputed"]}},
                    {"created_at": TIME}),
    "Stream": obj({"id": ID, "creator_id": USER_ID, "title": STR,
                   "status": {"type": "string", "enum": ["live", "ended"]},
                   "started_at": TIME, "ended_at": NULLABLE_TIME,
                   "viewers": {"type": "integer", "minimum": 0},
                   "coins_received": {"type": "integer", "minimum": 0}}),
    "GiftEvent": obj({"id": ID, "stream_id": ID, "seq": {"type": "integer", "minimum": 1},
                      "sender": obj({"id": USER_ID, "name": STR}),
                      "gift": obj({"id": ID, "name": STR, "coins": INT}),
                      "count": {"type": "integer", "minimum": 1, "maximum": 999},
                      "coins": {"type": "integer", "minimum": 1}, "created_at": TIME}),
    "TopGifter": obj({"user_id": USER_ID, "name": STR, "coins": {"type": "integer", "minimum": 0}}),
    "Earnings": obj({"creator_id": USER_ID, "unsettled_coins": INT, "settled_coins": INT,
                     "payable": ref("Money"), "paid": ref("Money")}),
    "SettlementLine": obj({"run_id": ID, "cutoff": TIME, "settled_at": TIME,
                           "agency_id": {"type": ["string", "null"]}, "gifts": INT, "gross_coins": INT,
                           "coin_value_micros": INT, "gross": ref("Money"), "creator": ref("Money"),
                           "agency": ref("Money"), "platform": ref("Money")},
                          {"carried": {"type": "object"}}),
    "Split": obj({"creator_id": USER_ID, "creator_bps": {"type": "integer", "minimum": 0, "maximum": 10000},
                  "agency_id": {"type": ["string", "null"]},
                  "agency_bps": {"type": "integer", "minimum": 0, "maximum": 10000},
                  "platform_bps": {"type": "integer", "minimum": 0, "maximum": 10000},
                  "effective_from": NULLABLE_TIME, "created_at": NULLABLE_TIME}),
}

ERRORS = {
    400: "Malformed request: not JSON, a missing or unknown field, a value of the wrong type.",
    401: "No, invalid or expired access token.",
    402: "Not enough coins (`insufficient_funds`).",
    403: "The caller's role or relation does not allow this (`forbidden`, `self_gift`, `wallet_in_debt`, "
         "`age_restricted`, `self_excluded`, `spending_limit` with details `limit`, `remaining_coins`, "
         "`resets_at`; `blocked`).",
    404: "No such resource.",
    405: "Method not allowed on this path.",
    409: "Conflicts with the current state (`idempotency_conflict`, `already_live`, `stream_not_live`, "
         "`history_is_settled`, `gifts_paused`).",
    413: "Request body over 64 KiB.",
    422: "A value out of range or otherwise invalid.",
    429: "Too many requests (`rate_limited`).",
    503: "A dependency is unavailable, or the service is shutting down; retry (with the same idempotency key).",
}


def error(status: int) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/E{status}"}


def ok(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def body(schema: Schema) -> dict[str, Any]:
    # Request bodies are closed: the API refuses unknown fields (400 unknown_field), so a
    # misspelt field is an error, not silently ignored. Responses stay open.
    return {"required": True, "content": {JSON: {"schema": {**schema, "additionalProperties": False}}}}


def path_param(name: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or STR}


def query_param(name: str, schema: Schema, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
PUBLIC: list[dict[str, list[str]]] = []


def op(summary: str, responses: dict[int, Any], *, tags: list[str], security: list[Any] | None = None,
       errors: tuple[int, ...] = (), request: Schema | None = None, params: list[Any] | None = None,
       description: str = "", open_body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "tags": tags, "security": security if security is not None else AUTH}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = params
    if request is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": request}}} if open_body else body(request)
    codes = set(errors) | {400, 503}
    if out["security"]:
        codes.add(401)
    resp = {str(k): v for k, v in responses.items()}
    for code in sorted(codes):
        resp[str(code)] = error(code)
    out["responses"] = resp
    return out


def html(summary: str) -> dict[str, Any]:
    return op(summary, {200: {"description": "An HTML page", "content": {"text/html": {"schema": STR}}}},
              tags=["pages"], security=PUBLIC)


STREAM_ID = path_param("stream_id")
LIMIT = {"type": "integer", "minimum": 1}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": op("Liveness", {200: ok(obj({"status": {"const": "ok"}}))}, tags=["operations"],
                           security=PUBLIC)},
    "/readyz": {"get": op("Readiness: Postgres and Redis reachable",
                          {200: ok(obj({"status": STR, "checks": {"type": "object"}})),
                           503: ok(obj({"status": STR, "checks": {"type": "object"}}), "Not ready")},
                          tags=["operations"], security=PUBLIC)},
    "/metrics": {"get": op("Prometheus metrics (text exposition format)",
                           {200: {"description": "Metrics", "content": {"text/plain": {"schema": STR}}}},
                           tags=["operations"], security=PUBLIC)},
    "/stats/latency": {"get": op("This process's stage latency histograms (count, mean, p50/p90/p99/p999 ms)",
                                 {200: ok(obj({"gift": {"type": "object"}, "batch": {"type": "object"},
                                               "fanout": {"type": "object"}}))},
                                 tags=["operations"], security=PUBLIC)},
    "/openapi.json": {"get": op("This document", {200: ok({"type": "object"})}, tags=["operations"],
                                security=PUBLIC)},
    "/": {"get": html("Index: links to the viewer page and the creator dashboard")},
    "/viewer": {"get": html("The viewer page")},
    "/dashboard": {"get": html("The creator dashboard")},
    "/static/{name}": {"get": op("A static file of the pages (CSS, JavaScript)",
                                 {200: {"description": "The file",
                                        "content": {"text/css": {"schema": STR}, "text/javascript": {"schema": STR},
                                                    "text/html": {"schema": STR}}}},
                                 tags=["pages"], security=PUBLIC, errors=(404,), params=[path_param("name")])},
    "/static/sdk/{name}": {"get": op("A module of the JavaScript client SDK (clients/js/src), for the pages to import",
                                     {200: {"description": "The ES module",
                                            "content": {"text/javascript": {"schema": STR}}}},
                                     tags=["pages"], security=PUBLIC, errors=(404,), params=[path_param("name")])},
    "/static/gifts/{name}": {"get": op("A catalog gift's icon (SVG), shipped with the pages",
                                       {200: {"description": "The icon",
                                              "content": {"image/svg+xml": {"schema": STR}}}},
                                       tags=["pages"], security=PUBLIC, errors=(404,), params=[path_param("name")])},
    "/v1/config": {"get": op("Where the pages find the WebSocket gateway, and what they need to know",
                             {200: ok(obj({"ws_url": STR, "dev_sign_in": BOOL},
                                          {"confirm_gift_coins": INT, "coin_value_micros": INT}))}, tags=["pages"],
                             security=PUBLIC)},
    "/v1/dev/token": {"post": op(
        "Development sign-in: a token for any user and role",
        {201: ok(obj({"token": STR, "user": obj({"id": USER_ID, "role": STR, "name": STR}, {"adult": BOOL}),
                      "expires_at": TIME}), "A token")},
        tags=["development"], security=PUBLIC, errors=(404, 413, 422),
        request=obj({"user_id": USER_ID},
                    {"role": {"type": "string", "enum": ["viewer", "creator", "admin"]},
                     "name": {**shown_text(64), "type": ["string", "null"]},
                     "adult": BOOL}),
        description="Exists only in development mode (neither GIFTING_JWT_SECRET nor GIFTING_WEBHOOK_SECRET "
                    "configured: both generated in the data dir); otherwise 404.")},
    "/v1/gifts": {"get": op("The gift catalog", {200: ok(obj({"gifts": array(ref("Gift"))}))}, tags=["catalog"],
                            security=PUBLIC)},
    "/v1/coin-packs": {"get": op("Coin packs for sale", {200: ok(obj({"packs": array(ref("CoinPack"))}))},
                                 tags=["catalog"], security=PUBLIC)},
    "/v1/wallet": {"get": op("The caller's coin balance (negative after a chargeback), limits and self-exclusion",
                             {200: ok(ref("Wallet"))}, tags=["wallet"])},
    "/v1/wallet/limits": {
        "get": op("The caller's spending limits and spending so far", {200: ok(obj({"limits": ref("Limits")}))},
                  tags=["spending"]),
        "put": op("Set the caller's limits: a lower one applies at once, a higher one or a removal after a "
                  "cooling-off (24 h daily, 7 days weekly)", {200: ok(obj({"limits": ref("Limits")}))},
                  tags=["spending"], errors=(413, 422),
                  request={"type": "object", "minProperties": 1,
                           "properties": {"daily_coins": LIMIT_COINS, "weekly_coins": LIMIT_COINS}},
                  description="A field left out keeps its limit as it is; null asks to remove that limit."),
    },
    "/v1/wallet/self-exclusion": {"post": op(
        "Exclude oneself from buying and gifting until a time (1 day to 5 years ahead; extended, never shortened)",
        {200: ok(obj({"self_excluded_until": TIME}))}, tags=["spending"], errors=(413, 422),
        request=obj({"until": TIME}))},
    "/v1/admin/users/{user_id}/spending": {"get": op(
        "A user's limits and self-exclusion (admin; read only: nothing lifts an exclusion)",
        {200: ok(obj({"user_id": USER_ID, "limits": ref("Limits"), "self_excluded_until": NULLABLE_TIME}))},
        tags=["admin"], errors=(403, 404), params=[path_param("user_id")])},
    "/v1/wallet/transactions": {"get": op(
        "The caller's wallet history, newest first",
        {200: ok(obj({"items": array(ref("WalletTransaction")), "next_cursor": {"type": ["string", "null"]}}))},
        tags=["wallet"], errors=(422,),
        params=[query_param("limit", {**LIMIT, "maximum": 200}), query_param("cursor", STR)])},
    "/v1/purchases": {"post": op(
        "Start buying a coin pack (the provider's webhook completes it)",
        {201: ok(obj({"purchase": ref("Purchase")}, {"checkout": {"type": "object"}}), "Pending purchase")},
        tags=["wallet"], errors=(403, 404, 409, 413, 422),
        request=obj({"pack_id": CATALOG_ID,
                     "idempotency_key": IDEMPOTENCY_KEY}))},
    "/v1/purchases/{purchase_id}": {"get": op(
        "One of the caller's purchases", {200: ok(obj({"purchase": ref("Purchase")}))}, tags=["wallet"],
        errors=(404,), params=[path_param("purchase_id")])},
    "/v1/payments/webhook": {"post": op(
        "Payment provider events, signed with Gifting-Signature",
        {200: ok(obj({"received": {"const": True}}))}, tags=["payments"], security=PUBLIC,
        errors=(404, 413, 422),
        params=[{"name": "Gifting-Signature", "in": "header", "required": True,
                 "schema": {"type": "string"}, "description": "t=<unix seconds>,v1=<hex HMAC-SHA256>"}],
        request=obj({"id": STR, "type": {"type": "string", "enum": ["payment.succeeded", "payment.failed",
                                                                      "payment.refunded", "payment.disputed"]},
                     "data": obj({"purchase_id": STR, "amount": INT, "currency": STR})}))},
    "/v1/streams": {
        "post": op("Go live", {201: ok(obj({"stream": ref("Stream")}), "Live")}, tags=["streams"],
                   errors=(403, 409, 413, 422),
                   request=obj({"title": shown_text(200)})),
        "get": op("Live streams", {200: ok(obj({"streams": array(ref("Stream"))}))}, tags=["streams"],
                  security=PUBLIC, errors=(422,),
                  params=[query_param("status", {"type": "string", "enum": ["live"]}),
                          query_param("limit", {**LIMIT, "maximum": 500})]),
    },
    "/v1/streams/{stream_id}": {"get": op("One stream", {200: ok(obj({"stream": ref("Stream")}))},
                                          tags=["streams"], security=PUBLIC, errors=(404,), params=[STREAM_ID])},
    "/v1/streams/{stream_id}/end": {"post": op(
        "End a stream (its creator or an admin)", {200: ok(obj({"stream": ref("Stream")}))}, tags=["streams"],
        errors=(403, 404), params=[STREAM_ID])},
    "/v1/streams/{stream_id}/gifts": {"get": op(
        "A stream's committed gifts after after_seq, in seq order (reload after recovered: false)",
        {200: ok(obj({"gifts": array(ref("GiftEvent")), "next_after_seq": {"type": ["integer", "null"]}}))},
        tags=["streams"], security=PUBLIC, errors=(404, 422),
        params=[STREAM_ID, query_param("after_seq", {"type": "integer", "minimum": 0}),
                query_param("limit", {**LIMIT, "maximum": 1000})]), "post": op(
        "Send a gift; answered after the durable commit", {201: ok(obj({"gift": ref("GiftEvent"), "balance": INT}),
                                                                    "Committed")},
        tags=["streams"], errors=(402, 403, 404, 409, 413, 422, 429), params=[STREAM_ID],
        request=obj({"gift_id": CATALOG_ID,
                     "count": {"type": "integer", "minimum": 1, "maximum": 999},
                     "idempotency_key": IDEMPOTENCY_KEY}))},
    "/v1/streams/{stream_id}/leaderboard": {"get": op(
        "Top gifters of a stream", {200: ok(obj({"top": array(ref("TopGifter"))}))}, tags=["streams"],
        security=PUBLIC, errors=(404, 422), params=[STREAM_ID, query_param("limit", {**LIMIT, "maximum": 100})])},
    "/v1/streams/{stream_id}/coins-per-minute": {"get": op(
        "A stream's committed gift coins per whole minute, oldest first, the current minute last",
        {200: ok(obj({"buckets": array(obj({"minute": TIME, "coins": {"type": "integer", "minimum": 0}}))}))},
        tags=["streams"], security=PUBLIC, errors=(404, 422),
        params=[STREAM_ID, query_param("minutes", {"type": "integer", "minimum": 1, "maximum": 1440})])},
    "/v1/creators/me/earnings": {"get": op("The calling creator's earnings", {200: ok(ref("Earnings"))},
                                           tags=["creators"], errors=(403,))},
    "/v1/creators/me/settlements": {"get": op(
        "The calling creator's settlement lines, newest first",
        {200: ok(obj({"items": array(ref("SettlementLine"))}, {"next_cursor": {"type": ["string", "null"]}}))},
        tags=["creators"], errors=(403, 422),
        params=[query_param("limit", {**LIMIT, "maximum": 200}), query_param("cursor", STR)])},
    "/v1/admin/creators/{creator_id}/split": {
        "put": op("Set a creator's revenue split from a date on (admin)", {200: ok(obj({"split": ref("Split")}))},
                  tags=["admin"], errors=(403, 404, 409, 413, 422), params=[path_param("creator_id")],
                  request=obj({"creator_bps": {"type": "integer", "minimum": 0, "maximum": 10000},
                               "effective_from": TIME},
                              {"agency_id": {"type": ["string", "null"]},
                               "agency_bps": {"type": "integer", "minimum": 0, "maximum": 10000}})),
        "get": op("A creator's split in force and its history (admin, that creator)",
                  {200: ok(obj({"current": ref("Split"), "history": array(ref("Split"))}))},
                  tags=["admin"], errors=(403, 404), params=[path_param("creator_id")]),
    },
}


# ---- battles (LIVE Match) ----------------------------------------------------------
BATTLE_ID = path_param("battle_id")
SCHEMAS["Stream"]["properties"]["battle_id"] = {"type": ["string", "null"]}
SCHEMAS["GiftEvent"]["properties"]["battle"] = {
    "type": ["object", "null"], "required": ["id", "score"],
    "properties": {"id": ID, "score": {"type": "integer", "minimum": 1}},
    "description": "the battle this gift counted toward and its side's score right after it; null otherwise"}
SCHEMAS["BattleSide"] = obj({"creator_id": USER_ID, "stream_id": ID, "score": {"type": "integer", "minimum": 0},
                             "top": array(ref("TopGifter"))})
SCHEMAS["Battle"] = obj({
    "id": ID, "status": {"type": "string", "enum": ["invited", "live", "ended", "declined", "cancelled", "expired"]},
    "duration_s": {"type": "integer", "minimum": 60, "maximum": 900}, "created_at": TIME,
    "starts_at": NULLABLE_TIME, "ends_at": NULLABLE_TIME,
    "sides": {**array(ref("BattleSide")), "minItems": 2, "maxItems": 2},
    "winner_creator_id": {"type": ["string", "null"]},
    "ended_reason": {"type": ["string", "null"], "enum": ["time", "stream_ended", None]},
}, {"expires_at": TIME, "ended_at": NULLABLE_TIME, "version": INT})
BATTLE_ANSWER = obj({"battle": ref("Battle")})
PATHS.update({
    "/v1/battles": {"post": op(
        "Invite a live creator to a battle (a creator with a live stream)", {201: ok(BATTLE_ANSWER, "Invited")},
        tags=["battles"], errors=(403, 409, 413, 422),
        request=obj({"opponent_creator_id": USER_ID, "idempotency_key": IDEMPOTENCY_KEY},
                    {"duration_s": {"type": "integer", "minimum": 60, "maximum": 900}}),
        description="409 already_in_battle when either creator is in an invited or live battle; 409 "
                    "stream_not_live when either is not live; 403 to battle oneself; 422 invalid_duration. "
                    "The invitation expires after 30 s.")},
    "/v1/battles/{battle_id}": {"get": op("One battle", {200: ok(BATTLE_ANSWER)}, tags=["battles"],
                                          security=PUBLIC, errors=(404,), params=[BATTLE_ID])},
    "/v1/battles/{battle_id}/accept": {"post": op(
        "Accept an invitation (the invited creator): the battle goes live", {200: ok(BATTLE_ANSWER)},
        tags=["battles"], errors=(403, 404, 409), params=[BATTLE_ID])},
    "/v1/battles/{battle_id}/decline": {"post": op(
        "Decline an invitation (the invited creator)", {200: ok(BATTLE_ANSWER)},
        tags=["battles"], errors=(403, 404, 409), params=[BATTLE_ID])},
    "/v1/battles/{battle_id}/cancel": {"post": op(
        "Withdraw an invitation (the inviter, while invited)", {200: ok(BATTLE_ANSWER)},
        tags=["battles"], errors=(403, 404, 409), params=[BATTLE_ID])},
})

# ---- engagement: goals, combos, paid messages, moderation ----------------------------

def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


GOAL: Schema = obj({"id": ID, "stream_id": ID, "title": STR, "target_coins": {"type": "integer", "minimum": 1},
                    "gift_id": {"type": ["string", "null"]}, "progress_coins": {"type": "integer", "minimum": 0},
                    "status": {"type": "string", "enum": ["active", "reached", "cleared"]},
                    "created_at": TIME, "reached_at": NULLABLE_TIME})
SCHEMAS["Goal"] = GOAL
SCHEMAS["Block"] = obj({"user_id": USER_ID, "created_at": TIME})
SCHEMAS["Stream"]["properties"].update({"gifts_paused": BOOL, "goal": nullable(ref("Goal"))})
SCHEMAS["GiftEvent"]["properties"].update({
    "combo": nullable(obj({"id": ID, "count": {"type": "integer", "minimum": 1}})),
    "goal": nullable(obj({"id": ID, "progress_coins": INT, "target_coins": INT, "reached": BOOL})),
    "message": {"type": ["string", "null"], "maxLength": 200},
    "pinned_until": NULLABLE_TIME,
    "message_hidden": {"type": ["boolean", "null"]},
})
# A paid message on a gift: 1-200 characters after trimming, no control characters.
SEND_GIFT = PATHS["/v1/streams/{stream_id}/gifts"]["post"]["requestBody"]["content"][JSON]["schema"]
SEND_GIFT["properties"]["message"] = {"type": ["string", "null"], "minLength": 1, "maxLength": 200,
                                      "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}
USER = path_param("user_id", USER_ID)
GOAL_OUT = ok(obj({"goal": ref("Goal")}))

PATHS.update({
    "/v1/streams/{stream_id}/goal": {
        "put": op("Set or replace the stream's goal (its creator); a new goal starts at 0", {200: GOAL_OUT},
                  tags=["engagement"], errors=(403, 404, 409, 413, 422), params=[STREAM_ID],
                  request=obj({"title": text(80), "target_coins": {"type": "integer", "minimum": 1,
                                                                   "maximum": 1_000_000_000}},
                              {"gift_id": {"type": ["string", "null"], "maxLength": 64}})),
        "delete": op("Clear the stream's goal (its creator, an admin)", {200: GOAL_OUT}, tags=["engagement"],
                     errors=(403, 404), params=[STREAM_ID]),
    },
    "/v1/streams/{stream_id}/pinned": {"get": op(
        "Paid messages pinned now and not hidden: most coins first, then lower seq",
        {200: ok(obj({"pinned": array(ref("GiftEvent"))}))}, tags=["engagement"], security=PUBLIC,
        errors=(404,), params=[STREAM_ID])},
    "/v1/streams/{stream_id}/gifts/{gift_id}/hide": {"post": op(
        "Hide a gift's message everywhere (its creator, an admin); the gift and its coins stay",
        {200: ok(obj({"gift": ref("GiftEvent")}))}, tags=["engagement"], errors=(403, 404),
        params=[STREAM_ID, path_param("gift_id")])},
    "/v1/streams/{stream_id}/gifts-paused": {"put": op(
        "Pause or resume gifts on a live stream (its creator, an admin)", {200: ok(obj({"stream": ref("Stream")}))},
        tags=["engagement"], errors=(403, 404, 409, 413), params=[STREAM_ID], request=obj({"paused": BOOL}))},
    "/v1/creators/me/blocks": {"get": op(
        "The calling creator's blocked users",
        {200: ok(obj({"items": array(ref("Block")), "next_cursor": {"type": ["string", "null"]}}))},
        tags=["engagement"], errors=(403, 422),
        params=[query_param("limit", {**LIMIT, "maximum": 200}), query_param("cursor", STR)])},
    "/v1/creators/me/blocks/{user_id}": {
        "put": op("Block a user from gifting the caller's streams (again: the same block)",
                  {200: ok(obj({"block": ref("Block")}))}, tags=["engagement"], errors=(403, 422), params=[USER]),
        "delete": op("Unblock a user", {200: ok(obj({"block": ref("Block")}))}, tags=["engagement"],
                     errors=(403, 404, 422), params=[USER]),
    },
})


def document() -> dict[str, Any]:
    responses = {f"E{status}": {"description": text, "content": {JSON: {"schema": ref("Error")}}}
                 for status, text in ERRORS.items()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gifting",
            "version": "1",
            "description": "Live-stream virtual gifts: coin wallet, gifts, live rooms, settlement. Money is "
                           "integers (coins; cash in minor units). Live updates come over the WebSocket "
                           "gateway (`ws://HOST:WS_PORT/v1/streams/{id}/live`); the whole contract is docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
