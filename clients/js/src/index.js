// @gifting/client: the Gifting protocol (v1, with the v2 engagement messages) for browsers and Node.
//
//   const client = new GiftingClient({ baseUrl, getToken });
//   const room = client.room(streamId);              // resumes, dedupes, folds state
//   room.on("gift", ({ gift }) => show(gift));
//   room.on("change", ({ state }) => render(state));
//   await room.connect();
//   await room.sendGift("rose", 1);                    // charged once, whatever happens to the socket

import { HttpClient } from "./http.js";
import { Room } from "./room.js";

export * from "./errors.js";
export { HttpClient } from "./http.js";
export { Room } from "./room.js";
export { createRoomState, foldGift, foldState, foldWelcome, prune, COMBO_TTL_MS } from "./state.js";
export { Emitter, backoffDelay, newKey, parseFrame, tokenExpiry } from "./util.js";

/** The protocol version this package speaks (v1, plus the v2 messages and fields). */
export const PROTOCOL_VERSION = 2;

/**
 * @typedef {import("./http.js").HttpOptions & {
 *   wsUrl?: string, WebSocket?: import("./room.js").SocketCtor
 * }} ClientOptions
 * @typedef {Omit<import("./room.js").RoomOptions, "streamId" | "wsUrl" | "getToken" | "http">
 *   & { wsUrl?: import("./room.js").RoomOptions["wsUrl"] }} RoomExtra
 */

/** The HTTP API plus rooms that share its token source and fall back on it. */
export class GiftingClient extends HttpClient {
  /** @param {ClientOptions} [o] */
  constructor(o = {}) {
    super(o);
    this.wsUrl = o.wsUrl ?? null;
    this.WebSocket = o.WebSocket;
  }

  /** The gateway's base URL: given, or asked of the API (`GET /v1/config`) once. */
  async gatewayUrl() {
    if (!this.wsUrl) this.wsUrl = (await this.config()).ws_url;
    return this.wsUrl;
  }

  /**
   * A live room (not yet connected: call `connect()`).
   * @param {string | number} streamId @param {RoomExtra} [o]
   */
  room(streamId, o = {}) {
    return new Room({
      ...o, streamId, http: this, WebSocket: o.WebSocket ?? this.WebSocket,
      wsUrl: o.wsUrl ?? (() => this.gatewayUrl()),
      getToken: async () => String((await this.getToken()) ?? ""),
    });
  }
}

/** @typedef {import("./types.js").GiftEvent} GiftEvent */
/** @typedef {import("./types.js").Stream} Stream */
/** @typedef {import("./types.js").Goal} Goal */
/** @typedef {import("./types.js").Battle} Battle */
/** @typedef {import("./types.js").ServerMessage} ServerMessage */
/** @typedef {import("./state.js").RoomState} RoomState */
/** @typedef {import("./room.js").RoomEvents} RoomEvents */
