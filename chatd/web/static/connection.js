// The page's connection to chatd: one WebSocket to /ws on the page's own host, JSON messages each way
// (docs/PROTOCOL.md, "WebSocket (browser) protocol"). A callback per message type, a callback per state.
// Nothing here touches the DOM.

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
  }

  /** Call `callback(message)` for each server message of this `type` ("events", "reply", "error", ...). */
  on(type, callback) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(callback);
    return this;
  }

  /** Call `callback(state, detail)` when the state changes ("connecting", "open", "closed"). */
  onState(callback) {
    this.stateHandlers.push(callback);
    return this;
  }

  open() {
    if (this.socket) return;
    this.setState("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => this.setState("open"));
    socket.addEventListener("message", (event) => this.received(event.data));
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) this.socket = null;
      this.setState("closed", event);
    });
  }

  close() {
    if (this.socket) this.socket.close(1000);
  }

  /** Send one JSON message; false if the connection is not open (nothing is queued). */
  send(value) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(value));
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

  received(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message.type !== "string") return;
    for (const callback of this.handlers.get(message.type) || []) callback(message);
    for (const callback of this.handlers.get("*") || []) callback(message);
  }

  setState(state, detail) {
    this.state = state;
    for (const callback of this.stateHandlers) callback(state, detail);
  }
}
