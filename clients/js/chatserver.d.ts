// Type declarations of chatserver.js, the JavaScript client of chatserver.

/** Envelope types the server sends. */
export declare const SERVER_TYPES: readonly ["message", "online", "offline", "history", "error", "ack", "delete", "gap"];
/** The client's own event names ("*" aside). */
export declare const CLIENT_EVENTS: readonly ["connect", "disconnect", "state"];
/** Close code of a kick or ban through the server API: the client does not reconnect. */
export declare const CLOSE_KICKED: 4001;
/** Close code of an expired JWT: the client reconnects only when `token` is a function. */
export declare const CLOSE_TOKEN_EXPIRED: 4002;

/** One server → client envelope: a message, presence, or a custom kind's event. */
export interface Envelope {
  id: string;
  /** "message", "online", "offline" or a custom kind such as "typing". */
  type: string;
  room: string;
  client_id: number;
  username: string;
  body?: string;
  /** The message rendered by the server's render_html step (escaped). */
  html?: string;
  /** A JSON object a plugin or the sender attached. */
  data?: Record<string, unknown>;
  /** Set on a direct message: the name it was sent to. */
  to?: string;
  /** Server local time, "YYYY-MM-DD HH:MM:SS". */
  datetime: string;
  /** Unix milliseconds. */
  ts: number;
}

/** The first frame of every connection. `messages` holds only envelopes not dispatched before. */
export interface HistoryFrame {
  type: "history";
  room: string;
  messages: Envelope[];
  /** Present after ?since=: false when that id was no longer in the history (there may be a gap). */
  complete?: boolean;
}

/** The server's answer to a frame with a ref that was accepted. No id when nothing was published (e.g. /who). */
export interface Ack {
  type: "ack";
  ref: string;
  id?: string;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  reason: string;
  /** The ref of the frame this answers, if it had one. */
  ref?: string;
}

export interface DeleteFrame {
  type: "delete";
  room: string;
  id: string;
}

export type ServerFrame = Envelope | HistoryFrame | Ack | ErrorFrame | DeleteFrame;

export type State = "connecting" | "connected" | "disconnected" | "closed";

export interface ConnectInfo {
  /** True from the second connection on: the history frame held what was missed. */
  recovered: boolean;
  /** False when the history no longer held the last message seen (a gap is possible). */
  complete: boolean;
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Whether the client reconnects. */
  reconnect: boolean;
  /** Milliseconds until the next attempt (when reconnect is true). */
  delay?: number;
}

/** Second argument of envelope listeners. */
export interface DispatchMeta {
  /** The envelope came in a history frame (first join or recovery), not live. */
  fromHistory: boolean;
}

/** What send() takes besides a plain string body. */
export interface OutboundFrame {
  /** "message" (the default) or a custom kind of the server. */
  type?: string;
  body?: string;
  /** Renames the sender where the server allows it. */
  username?: string;
  data?: Record<string, unknown>;
  /** A direct message to the member(s) of this name in the room. */
  to?: string;
  /** 1-64 printable ASCII characters; the client makes one when absent. */
  ref?: string;
}

export interface SendOptions {
  /** Send now or never: not queued while offline, not resent after a reconnect. */
  volatile?: boolean;
}

export interface Member {
  client_id: number;
  username: string;
}

/** A WebSocket constructor: the global one, or e.g. the ws package's. */
export type WebSocketClass = new (url: string, ...options: any[]) => {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
};

export interface Options {
  /** The room to join. Default "lobby". */
  room?: string;
  /**
   * A JWT for the username plugin's jwt mode, sent as the query parameter
   * tokenParam of every handshake. A function is called before every
   * (re)connect, so an expired token can be replaced (close 4002).
   */
  token?: string | (() => string | Promise<string>);
  /** The query parameter of the token (the plugin's token_param). Default "token". */
  tokenParam?: string;
  /**
   * Sent as the `username` of every frame that has none, resends included:
   * it renames where the server allows it, and in plain mode it is the name
   * a resent ref is recognised by (a guest without it may get a message
   * whose ack was lost delivered twice).
   */
  username?: string;
  /** Resume after this message id on the first connect (e.g. the last one a page rendered). */
  since?: string;
  /** Backoff: the first reconnect waits up to this many ms. Default 500. */
  minReconnectDelay?: number;
  /** Backoff cap in ms; a connection that stayed ready this long resets the backoff. Default 10000. */
  maxReconnectDelay?: number;
  /**
   * A frame written and not answered within this many ms (or a probe) means
   * the connection is dead: the client closes it (4000), reconnects and
   * writes the frame again; 0: never. Default 10000.
   */
  ackTimeout?: number;
  /** After this many ms without a frame from the server, a probe is sent (answered without side effects); 0: never. Default 30000. */
  probeInterval?: number;
  /** A send() rejects with code "timeout" after this many ms in all (the frame is forgotten, it may have been delivered); 0: never. Default 0. */
  sendTimeout?: number;
  /** Refused joins in a row (1008 before the history frame) after which a client with a token function stops; without one the first is final. Default 3. */
  maxRefusals?: number;
  /** Frames larger than this (bytes) are refused locally: the server's websocket.max_message_bytes. Default 8192. */
  maxFrameBytes?: number;
  /** How many envelope ids are remembered to drop duplicates; keep it at least the server's history.size. Default 1000, at least 100. */
  dedupe?: number;
  /** The WebSocket class. Default globalThis.WebSocket. */
  WebSocket?: WebSocketClass;
  /** The fetch function members() uses. Default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Headers of members()'s request and of the handshake where the WebSocket class takes them (Node's own, the ws package's; not a browser's). */
  headers?: Record<string, string>;
}

/** How a send() fails: code is the server's error code or the client's own (closed, timeout, not_connected, too_big). */
export declare class ChatError extends Error {
  constructor(code: string, reason?: string, ref?: string);
  readonly code: string;
  readonly reason: string;
  readonly ref?: string;
}

export interface EventMap {
  message: (env: Envelope, meta: DispatchMeta) => void;
  online: (env: Envelope, meta: DispatchMeta) => void;
  offline: (env: Envelope, meta: DispatchMeta) => void;
  history: (frame: HistoryFrame) => void;
  error: (frame: ErrorFrame) => void;
  ack: (frame: Ack) => void;
  delete: (frame: DeleteFrame) => void;
  connect: (info: ConnectInfo) => void;
  disconnect: (info: DisconnectInfo) => void;
  state: (state: State, previous: State) => void;
  "*": (frame: ServerFrame) => void;
}

export declare class Client {
  constructor(url: string | URL | undefined, options?: Options);
  readonly options: Required<Pick<Options, "room">> & Options;
  readonly room: string;
  readonly state: State;
  /**
   * The ?since= of the next connect: the id of the last envelope seen that
   * the server is believed to keep — a history frame's last entry, or a live
   * envelope without `to` that is not a system reply (username "system",
   * client_id 0), of type message or of a type seen in a history frame; a
   * delete of it moves it back to the kept id before.
   */
  readonly lastId: string;
  /** This connection's client_id once an ack told which envelope was ours, else null. */
  readonly clientId: number | null;
  /** How many sends wait for their ack. */
  readonly pending: number;
  on<K extends keyof EventMap>(type: K, fn: EventMap[K]): () => void;
  /** A custom kind (e.g. "typing"). */
  on(type: string, fn: (env: Envelope, meta: DispatchMeta) => void): () => void;
  off<K extends keyof EventMap>(type: K, fn?: EventMap[K]): void;
  off(type: string, fn?: (env: Envelope, meta: DispatchMeta) => void): void;
  send(message: string | OutboundFrame, options?: SendOptions): Promise<Ack>;
  /** GET /api/rooms/{room}/members, with the token as a join sends it (rooms of proven members need it); rejects with code "http_STATUS". */
  members(): Promise<Member[]>;
  close(): void;
}

/** Connects to the room at url (http(s) or ws(s), with or without /chatsocket) in the background. */
export declare function connect(url?: string | URL, options?: Options): Client;
