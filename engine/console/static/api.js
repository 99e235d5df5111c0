// The admin API client: JSON-RPC 2.0 over the browser's own WebSocket, reconnecting.
//
// One socket at a time to ws(s)://<this host>/api. When it drops (engine restart, network),
// pending calls fail with code "disconnected" and the client retries with exponential
// backoff (0.5 s doubling to 8 s, with jitter so many pages do not return at once). Each time
// a socket opens, the owner's `onOpen` runs (resume the session, subscribe, resynchronise)
// before the client reports itself "ready". Notifications go to `onNotification`.
//
// The token never travels in the URL (it would land in access logs): the session is resumed
// with Auth.resume as the first call on each socket.

/** An error answer from the engine (code, message, data), or a transport failure. */
export class ApiError extends Error {
  constructor(code, message, data = null) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.data = data;
  }
}

/** Seconds to wait before reconnect attempt `attempt` (0-based), without jitter. */
export function backoffDelay(attempt, { initial = 0.5, max = 8 } = {}) {
  return Math.min(max, initial * 2 ** attempt);
}

/** The admin API's URL for a page served at `location`. */
export function apiUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api`;
}

export class ApiClient {
  /**
   * @param {object} options
   * @param {string} options.url - the WebSocket URL.
   * @param {(client) => Promise} options.onOpen - run on every new socket before "ready".
   * @param {(method, params) => void} options.onNotification
   * @param {(state, detail) => void} options.onState - "connecting", "ready", "down"
   *   (detail: {attempt, delay, reason}) and "stopped".
   * @param {number} options.callTimeout - milliseconds before a call fails with "timeout".
   */
  constructor({ url, onOpen, onNotification, onState, callTimeout = 30000 }) {
    this.url = url;
    this.onOpen = onOpen || (async () => {});
    this.onNotification = onNotification || (() => {});
    this.onState = onState || (() => {});
    this.callTimeout = callTimeout;
    this.state = "idle";
    this.socket = null;
    this.nextId = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.retryTimer = null;
    this.readyWaiters = [];
    this.stopped = false;
  }

  /** Open the socket (and keep reopening it until `stop`). */
  start() {
    this.stopped = false;
    if (!this.socket && !this.retryTimer) this.connect();
  }

  /** Close for good (no reconnect). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.socket) this.socket.close(1000, "bye");
    this.setState("stopped");
  }

  /** Reconnect now instead of waiting for the backoff ("Retry now"). */
  retryNow() {
    if (this.state !== "down") return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  /** A promise fired once the client is ready (after `onOpen`), or rejected after `ms`. */
  whenReady(ms = 15000) {
    if (this.state === "ready") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(new ApiError("disconnected", "cannot reach the engine"));
      }, ms);
      this.readyWaiters.push(waiter);
    });
  }

  /**
   * Call a verb.
   * @returns {Promise} its result; rejected with an ApiError (the engine's code, or
   *   "disconnected"/"timeout").
   */
  call(method, params = {}) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ApiError("disconnected", "not connected to the engine"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ApiError("timeout", `${method}: no answer from the engine`));
      }, this.callTimeout);
      this.pending.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  // -- the socket ----------------------------------------------------------------------------

  connect() {
    this.retryTimer = null;
    this.setState("connecting");
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.dropped(`cannot connect: ${error.message}`);
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => this.opened(socket));
    socket.addEventListener("message", (event) => this.received(event.data));
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) this.dropped(event.reason || `closed (${event.code})`);
    });
  }

  async opened(socket) {
    try {
      await this.onOpen(this);
    } catch (error) {
      // The owner could not set the connection up (the engine is starting: 503, ...):
      // treat it as a failed attempt and let the backoff go on.
      if (this.socket === socket) socket.close(4000, "setup failed");
      return;
    }
    if (this.socket !== socket || socket.readyState !== WebSocket.OPEN) return;
    this.attempt = 0;
    this.setState("ready");
    for (const waiter of this.readyWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
  }

  received(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not JSON: nothing the engine would send
    }
    for (const one of Array.isArray(message) ? message : [message]) {
      if (one.id === undefined || one.id === null) {
        if (typeof one.method === "string") this.onNotification(one.method, one.params || {});
        continue;
      }
      const waiter = this.pending.get(one.id);
      if (!waiter) continue;
      this.pending.delete(one.id);
      clearTimeout(waiter.timer);
      if (one.error) waiter.reject(new ApiError(one.error.code, one.error.message, one.error.data));
      else waiter.resolve(one.result);
    }
  }

  dropped(reason) {
    this.socket = null;
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new ApiError("disconnected", "the connection to the engine was lost"));
    }
    this.pending.clear();
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.setState("down", { attempt: this.attempt, delay, reason });
    this.retryTimer = setTimeout(() => this.connect(), delay * 1000);
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }
}
