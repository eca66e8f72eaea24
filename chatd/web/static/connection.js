// The page's connection to chatd: one WebSocket to /ws on the page's own host, JSON messages each way
// (docs/PROTOCOL.md, "WebSocket (browser) protocol"). A callback per message type, a callback per state.
// Nothing here touches the DOM.
//
// Reconnecting (docs/PROTOCOL.md, "Resuming a session"): a connection lost without the server having ended
// the session (no close frame, or 1001 at a server's shut-down) is opened again after 1, 2, 4 ... at most
// 30 seconds (each with jitter); once open it sends `resume` with the last resume token, the room and the
// last event id the page gives (resumeWith), and the server logs in again and catches the room up. The token
// lives in this object only: never in storage, a cookie or a URL.

/** Seconds before the first attempt to connect again, the longest wait between two, and attempts in all. */
const FIRST_RETRY = 1;
const LAST_RETRY = 30;
const RETRIES = 120;
/** Seconds a sent line or command may go without a word from the server before the state is "slow". */
export const SLOW = 5;

/** The WebSocket address of the page's own host: ws://HOST/ws, or wss:// when the page came over https. */
export function socketUrl(location = window.location) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

export class Connection {
  /** @param {string} url the WebSocket address (default: this page's /ws) */
  constructor(url = socketUrl()) {
    this.url = url;
    this.socket = null;
    /** "connecting", "open" or "closed" */
    this.state = "closed";
    this.handlers = new Map();
    this.stateHandlers = [];
    /** The resume token of the last login (memory only), and what to resume: () => ({room, after}). */
    this.token = null;
    this.resumeState = () => ({ room: null, after: null });
    /** A resume sent and not answered yet; close() asked for; attempts since the last open; the retry timer. */
    this.resuming = false;
    this.closing = false;
    this.attempts = 0;
    this.retryTimer = null;
    /** The timer started by the first line or command sent since the server last said something; the state
     * to go back to when it speaks again after "slow". */
    this.slowTimer = null;
    this.beforeSlow = null;
    this.on("login", (m) => { this.token = m.token || null; });
    this.on("token", (m) => { this.token = m.token || this.token; });
    this.on("logout", () => { this.token = null; });
    window.addEventListener("online", () => this.retryNow());
  }

  /** What a resume goes back to: `state()` returns {room, after} (the room's name and its last event id shown). */
  resumeWith(state) {
    this.resumeState = state;
    return this;
  }

  /** Call `callback(message)` for each server message of this `type` ("events", "reply", "error", ...). */
  on(type, callback) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(callback);
    return this;
  }

  /**
   * Call `callback(state, detail)` when the state changes: "connecting", "open", "closed" (detail: the close
   * event), "reconnecting" (lost; detail: {delay, attempt} while waiting to try again), "reconnected" (logged
   * in again), "expired" (open, but the token was refused: log in again; detail: the server's reason),
   * "slow" (open, but a line or command sent SLOW seconds ago has had no word from the server since: a server
   * that stopped, a path that holds data; the state before comes back with the server's next message).
   */
  onState(callback) {
    this.stateHandlers.push(callback);
    return this;
  }

  open() {
    if (this.socket) return;
    const again = this.attempts > 0;
    this.setState(again ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => this.opened());
    socket.addEventListener("message", (event) => this.received(event.data));
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.resuming = false;
      if (this.slowTimer !== null) clearTimeout(this.slowTimer);
      this.slowTimer = null;
      // 1000: the session was ended (replaced, kicked, quit...) or the page closed it: not resumed.
      if (this.closing || event.code === 1000) {
        this.closing = false;
        this.token = null;
        this.setState("closed", event);
      } else {
        this.retry(event);
      }
    });
  }

  opened() {
    this.attempts = 0;
    if (this.token) {
      const { room, after } = this.resumeState();
      this.resuming = true;
      this.send({ type: "resume", token: this.token, room: room || null, after: after ?? null });
    } else {
      this.setState("open");
    }
  }

  /** Lost without the server ending the session: open again after a growing wait, with jitter. */
  retry(event) {
    if (this.attempts >= RETRIES) {
      this.token = null;
      this.setState("closed", event);
      return;
    }
    const wait = Math.min(LAST_RETRY, FIRST_RETRY * 2 ** this.attempts) * (0.8 + 0.4 * Math.random());
    this.attempts += 1;
    this.setState("reconnecting", { delay: wait, attempt: this.attempts });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, wait * 1000);
  }

  /** The network is back (the browser says so): try now instead of at the end of the wait. */
  retryNow() {
    if (this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.open();
  }

  close() {
    if (this.socket) {
      this.closing = true;
      this.socket.close(1000);
    }
  }

  /** Whether messages can be sent now (open, whatever the state says: "open", "reconnected", "expired"). */
  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Send one JSON message; false if the connection is not open (nothing is queued). */
  send(value) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(value));
    if ((value.type === "line" || value.type === "command") && this.slowTimer === null) {
      this.slowTimer = setTimeout(() => {
        this.slowTimer = null;
        if (!this.isOpen || this.state === "slow") return;
        this.beforeSlow = this.state;
        this.setState("slow");
      }, SLOW * 1000);
    }
    return true;
  }

  /** Run a command by name: command("join", "lab"). */
  command(name, ...args) {
    return this.send({ type: "command", name, args: args.map(String) });
  }

  /** Send a line as typed in telnet: "/kick bob spam", "hello", "//not a command". */
  line(text) {
    return this.send({ type: "line", text });
  }

  /** The server said something (or the connection ended): not waiting for it any more. */
  heard() {
    if (this.slowTimer !== null) clearTimeout(this.slowTimer);
    this.slowTimer = null;
    if (this.state === "slow") {
      const state = this.beforeSlow || "open";
      this.beforeSlow = null;
      this.setState(state);
    }
  }

  received(data) {
    this.heard();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message.type !== "string") return;
    if (this.resuming && (message.type === "login" || message.type === "error")) {
      this.resuming = false;
      if (message.type === "error") {  // the token was refused (expired, void, locked): log in again
        this.token = null;
        this.setState("expired", message.text);
        return;
      }
      this.setState("reconnected");
    }
    for (const callback of this.handlers.get(message.type) || []) callback(message);
    for (const callback of this.handlers.get("*") || []) callback(message);
  }

  setState(state, detail) {
    this.state = state;
    for (const callback of this.stateHandlers) callback(state, detail);
  }
}
