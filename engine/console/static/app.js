// The console's entry point: the session (login, resume, expiry), the connection banner, the
// router between views, and the glue from the engine's notifications to the store and views.
//
// The session token lives in sessionStorage (this tab only, gone when it closes; never a
// cookie, so no other site can act through this browser). Every new socket resumes the
// session with Auth.resume, subscribes to everything, and resynchronises by listing hosts,
// VMs and jobs and fetching the events since the newest one the page has.

import { Notices } from "./actions.js";
import { ApiClient, ApiError, apiUrl } from "./api.js";
import { Dashboard } from "./dashboard.js";
import { HostDetail, VmDetail } from "./details.js";
import { setText, showOnly } from "./dom.js";
import { Store } from "./store.js";

const TOKEN_KEY = "vdsmlike.console.token";

/** Why the login form is shown again, by the engine's reason. */
export const SESSION_ENDED = {
  expired: "Your session expired. Log in again.",
  session_expired: "Your session expired. Log in again.",
  logged_out: "You were logged out. Log in again.",
  invalid_token: "Your session is no longer valid (it expired or was ended). Log in again.",
  login_required: "Log in to continue.",
};

/** Pure: the message for a failed login. */
export function loginError(error) {
  if (error.code === 403) return "Wrong user name or password.";
  if (error.code === 429) {
    const wait = Math.max(1, Math.ceil(Number(error.data?.retry_after ?? 60)));
    return `Too many failed logins, retry in ${wait} s.`;
  }
  if (error.code === "disconnected" || error.code === "timeout") {
    return "Cannot reach the engine; it may be restarting. Try again in a moment.";
  }
  return `Login failed: ${error.message}`;
}

const $ = (id) => document.getElementById(id);

class Console {
  constructor() {
    this.store = new Store();
    this.user = null;
    this.view = null;
    this.renderQueued = new Set();
    this.notices = new Notices($("notices"), this.store);
    this.client = new ApiClient({
      url: apiUrl(window.location),
      onOpen: () => this.setUp(),
      onNotification: (method, params) => this.notified(method, params),
      onState: (state, detail) => this.connection(state, detail),
    });
    this.ctx = {
      store: this.store,
      client: this.client,
      notices: this.notices,
      call: (method, params) => this.call(method, params),
    };
    this.store.subscribe((kind, id) => this.changed(kind, id));
  }

  start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.login();
    });
    $("logout").addEventListener("click", () => this.logout());
    $("retry-now").addEventListener("click", () => this.client.retryNow());
    window.addEventListener("hashchange", () => this.route());
    window.addEventListener("online", () => this.client.retryNow());
    // Uptimes move on by themselves: re-render them, nothing is fetched.
    setInterval(() => this.changed("tick"), 5000);
    if (sessionStorage.getItem(TOKEN_KEY)) this.screen("connecting");
    else this.showLogin("");
    this.client.start();
  }

  // -- the session ---------------------------------------------------------------------------

  /** On every new socket: resume the session if there is one. */
  async setUp() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return;
    let session;
    try {
      session = await this.client.call("Auth.resume", { token });
    } catch (error) {
      if (error.code === 401) return this.ended(error.data?.reason || "invalid_token");
      throw error; // 503 and the like: the client retries
    }
    await this.enter(session);
  }

  async enter(session) {
    this.user = session.user;
    setText($("user-name"), session.user);
    await this.client.call("Engine.subscribe", { patterns: ["*"] });
    await this.resync();
    this.screen("app");
    this.route();
  }

  /** Fetch everything again; notifications that arrive meanwhile are replayed after. */
  async resync() {
    const since = this.store.newestEventId();
    this.store.beginSync();
    try {
      const [hosts, vms, jobs, events] = await Promise.all([
        this.client.call("Hosts.list"),
        this.client.call("VMs.list"),
        this.client.call("Jobs.list", { limit: 50 }),
        this.client.call("Events.list", since ? { since, limit: 500 } : { limit: 200 }),
      ]);
      this.store.endSync({ hosts, vms, jobs, events });
    } catch (error) {
      this.store.abortSync();
      throw error;
    }
    if (this.view) this.view.resync();
  }

  async login() {
    const button = $("login-submit");
    const user = $("login-user").value.trim();
    const password = $("login-password").value;
    button.disabled = true;
    this.loginMessage("Logging in\u2026", "info");
    try {
      await this.client.whenReady();
      const result = await this.client.call("Auth.login", { user, password });
      sessionStorage.setItem(TOKEN_KEY, result.token);
      $("login-password").value = "";
      this.loginMessage("", "info");
      await this.enter(result);
    } catch (error) {
      const e = error instanceof ApiError ? error : new ApiError("error", String(error));
      this.loginMessage(loginError(e), "error");
      if (e.code === 429) this.countdown(Number(e.data?.retry_after ?? 60));
      $("login-password").focus();
    } finally {
      if (!this.lockedUntil) button.disabled = false;
    }
  }

  /** After a 429: count down the wait on the form, then allow another try. */
  countdown(seconds) {
    clearInterval(this.lockTimer);
    this.lockedUntil = Date.now() + seconds * 1000;
    $("login-submit").disabled = true;
    this.lockTimer = setInterval(() => {
      const left = Math.ceil((this.lockedUntil - Date.now()) / 1000);
      if (left > 0) {
        this.loginMessage(`Too many failed logins, retry in ${left} s.`, "error");
        return;
      }
      clearInterval(this.lockTimer);
      this.lockedUntil = null;
      $("login-submit").disabled = false;
      this.loginMessage("You may try again.", "info");
    }, 1000);
  }

  async logout() {
    try {
      await this.client.call("Auth.logout");
    } catch {
      // the session ends here whatever the engine says
    }
    this.ended("logged_out", "You logged out.");
  }

  /** The session is over: back to the login form, saying why. */
  ended(reason, message = null) {
    sessionStorage.removeItem(TOKEN_KEY);
    this.user = null;
    this.closeView();
    this.store.clear();
    this.notices.clear();
    this.showLogin(message || SESSION_ENDED[reason] || SESSION_ENDED.invalid_token);
  }

  /** Call a verb for a view; a 401 ends the session (and is re-thrown). */
  async call(method, params = {}) {
    try {
      return await this.client.call(method, params);
    } catch (error) {
      if (error.code === 401) this.ended(error.data?.reason || "session_expired");
      throw error;
    }
  }

  // -- the connection ------------------------------------------------------------------------

  notified(method, params) {
    if (method.startsWith("|engine|session|")) {
      this.ended(method.slice("|engine|session|".length));
    } else if (method.startsWith("|engine|console|")) {
      if (this.view && this.view.kind === "vm" && params.vm === this.view.id) {
        this.view.console(params);
      }
    } else {
      this.store.apply(method, params);
    }
  }

  connection(state, detail) {
    const banner = $("banner");
    if (state === "ready") {
      banner.hidden = true;
      return;
    }
    if (state === "down") {
      if (this.view) this.view.lost();
      this.store.abortSync();
      banner.hidden = false;
      setText($("banner-text"), `Connection to the engine lost. Reconnecting in ${
        Math.max(1, Math.round(detail.delay))} s\u2026`);
    } else if (state === "connecting" && !banner.hidden) {
      setText($("banner-text"), "Connection to the engine lost. Reconnecting\u2026");
    }
  }

  // -- screens and views ---------------------------------------------------------------------

  screen(name) {
    showOnly($(`${name}-screen`), $("connecting-screen"), $("login-screen"), $("app-screen"));
    $("session-bar").hidden = name !== "app";
  }

  showLogin(message) {
    this.screen("login");
    this.loginMessage(message, message ? "warning" : "info");
    $("login-user").focus();
  }

  loginMessage(text, kind) {
    const box = $("login-message");
    box.className = `message message-${kind}`;
    setText(box, text);
  }

  route() {
    if (!this.user) return;
    const [, kind, id] = /^#\/(hosts|vms)\/([^/]+)$/.exec(window.location.hash) || [];
    const key = kind ? `${kind}/${id}` : "dashboard";
    if (this.view && this.view.key === key) return;
    this.closeView();
    const decoded = id ? decodeURIComponent(id) : null;
    const view = kind === "hosts" ? new HostDetail(this.ctx, decoded)
      : kind === "vms" ? new VmDetail(this.ctx, decoded) : new Dashboard(this.ctx);
    view.key = key;
    this.view = view;
    $("view").replaceChildren(view.element);
    view.render("reset");
    if (view.load) view.load();
    document.title = `${view.element.querySelector("h1").textContent} \u2014 vdsmlike engine`;
    view.element.querySelector("h1").focus();
  }

  closeView() {
    if (this.view && this.view.close) this.view.close();
    this.view = null;
    $("view").replaceChildren();
  }

  /** Coalesce store changes into one render per animation frame. */
  changed(kind, id = null) {
    if (!this.view) return;
    this.renderQueued.add(JSON.stringify([kind, id]));
    if (this.renderQueued.size > 1) return;
    requestAnimationFrame(() => {
      const queued = [...this.renderQueued].map((text) => JSON.parse(text));
      this.renderQueued.clear();
      if (!this.view) return;
      for (const [k, i] of queued) this.view.render(k, i);
      if (this.view.title && this.view.key !== "dashboard") {
        document.title = `${this.view.title.textContent} \u2014 vdsmlike engine`;
      }
    });
  }
}

new Console().start();
