// The chatd page: log in or register, the room list, a room's lines, the line where text is said and
// /commands are typed as in telnet. The protocol: docs/PROTOCOL.md, "WebSocket (browser) protocol".
//
// Everything users wrote (names, lines, topics, room names) goes into the DOM as text (textContent,
// createTextNode), never as HTML; user text has dir="auto" and names are isolated in <bdi>, so a bidi
// override in a name cannot reorder the rest of the line.

import { Connection } from "./connection.js";

/** Seconds between refreshes of the room list while it is shown. */
const ROOMS_REFRESH = 30;
/** Lines asked for each time the user scrolls back to the top of a room. */
const OLDER_PAGE = 50;
/** Lines kept in the menu's message area. */
const MENU_MESSAGES = 50;
/** Pixels from the top of the log at which older lines are loaded. */
const TOP_SLACK = 24;
/** Room lines kept in the log; past it the oldest go (scrolling back loads them again). */
const LOG_LINES = 1000;
/** Lines typed in rooms that Up and Down bring back. */
const TYPED_KEPT = 100;
/** Pixels from the bottom of the log within which the user's own scrolling counts as "at the bottom". */
const BOTTOM_SLACK = 4;

const $ = (id) => document.getElementById(id);

/** An element with a class and children (strings become text nodes). */
function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** A user's name, isolated from the text around it. */
function nameNode(name) {
  const node = el("bdi", "name");
  node.textContent = name || "chatd";
  return node;
}

/** Text users wrote, its direction taken from itself. */
function userText(text, className = "text") {
  const node = el("span", className);
  node.dir = "auto";
  node.textContent = text;
  return node;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** A time (seconds since the epoch) in the user's local time; the date too when it is not today. */
function timeNode(at) {
  const moment = new Date(at * 1000);
  const node = el("time", "at");
  node.dateTime = moment.toISOString();
  node.title = moment.toLocaleString();
  node.textContent = sameDay(moment, new Date()) ? moment.toLocaleTimeString() : moment.toLocaleString();
  return node;
}

/** Seconds as the largest whole unit: 2h, 90s, 7d (chatd.moderation.duration_text). */
function durationText(seconds) {
  seconds = Math.round(seconds);
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/** The parts after the time of an event other than say (as telnet shows it after "* "; chatd.render). */
function actionParts(event) {
  const by = nameNode(event.sender);
  const target = nameNode(event.target);
  const reason = event.text ? [" (", userText(event.text), ")"] : [];
  const until = event.until ? [` for ${durationText(event.until - event.at)}`] : [];
  switch (event.kind) {
    case "me": return [by, " ", userText(event.text)];
    case "join": return [by, " joined"];
    case "leave": return [by, " left"];
    case "file_offer": return [by, " is sending ", userText(event.text)];
    case "file": return [by, " shared ", userText(event.text)];
    case "file_failed": return [by, "'s file ", userText(event.text)];
    case "kick": return [by, " kicked ", target, ...reason];
    case "ban": return [by, " banned ", target, ...until, ...reason];
    case "mute": return [by, " muted ", target, ...until, ...reason];
    case "unban":
      return event.sender ? [by, " lifted the ban on ", target] : [target, " is no longer banned (the ban ran out)"];
    case "unmute":
      return event.sender ? [by, " unmuted ", target] : [target, " may speak again (the mute ran out)"];
    case "topic": return event.text ? [by, " set the topic: ", userText(event.text)] : [by, " cleared the topic"];
    case "setting": return event.text === "on" || event.text === "off"
      ? [by, " turned ", userText(event.target), " ", userText(event.text)]
      : [by, " set ", userText(event.target), " to ", userText(event.text)];
    case "invite":
      return event.text === "withdrawn" ? [by, " withdrew ", target, "'s invitation"] : [by, " invited ", target];
    case "op": return event.sender === event.target ? [by, " took the operator role back"]
      : [by, " made ", target, " an operator"];
    case "deop": return event.sender === event.target ? [by, " put the operator role down"]
      : [by, " took ", target, "'s operator role away"];
    case "voice": return [by, " gave ", target, " a voice"];
    case "devoice": return [by, " took ", target, "'s voice away"];
    case "owner": return [by, " gave the room to ", target];
    default: return [by, ` (${event.kind}) `, userText(event.text || "")];
  }
}

const PRESENCE = new Set(["join", "leave"]);
const FILES = new Set(["file_offer", "file", "file_failed"]);
/**
 * The user's own file events, shown by the sender's upload line instead (files.js: "Sending X … sent to N
 * people (SHA-256 verified)", or why not): one line per file in the sender's log, not three.
 */
const FOLDED = new Set(["file_offer", "file"]);

/** One room event as a line of the log. */
function eventNode(event) {
  let kind = "moderation";
  if (event.kind === "say") kind = "say";
  else if (event.kind === "me") kind = "me";
  else if (PRESENCE.has(event.kind)) kind = "presence";
  else if (FILES.has(event.kind)) kind = "file";
  const line = el("div", `line ${kind}`, timeNode(event.at), " ");
  line.dataset.id = String(event.id);
  line.dataset.kind = event.kind;
  if (event.kind === "say") {
    line.append(nameNode(event.sender), ": ", userText(event.text));
  } else {
    line.append("* ", ...actionParts(event));
  }
  return line;
}

class Page {
  constructor() {
    this.connection = new Connection();
    this.me = null;
    this.room = null;
    this.older = null;
    this.loadingOlder = false;
    this.shown = new Set();
    this.pendingJoin = null;
    this.pendingLogout = false;
    this.removedText = "";
    this.roomsTimer = null;
    this.lastRooms = [];
    /** The rooms list is asked for again at the next reply (a create or delete was sent). */
    this.roomsStale = false;
    /**
     * Whether the log follows new lines: set by the user's own scrolling (at the bottom or not), never by a
     * distance measured after the layout changed; the scrollTop the page itself last set (scroll events it
     * causes are not the user's).
     */
    this._following = true;
    this.autoTop = 0;
    /**
     * The user's lines sent and not yet come back from the server as their room's event, oldest first: each
     * its pending line in the log ({text, node}). The server handles one connection's messages in order, so
     * the next own say or me event is the oldest pending line's (its text may have been cleaned on the way).
     */
    this.pending = [];
    /** The last thing the server told the user (an error, a notice, a reply): why a session ended. */
    this.lastWord = "";
    /** Lines typed in rooms, oldest first, and where Up/Down is in them (typed.length: the line being typed). */
    this.typed = [];
    this.typedAt = 0;
    this.draft = "";
    /** What to send once the connection opens again (a login typed while it was closed). */
    this.whenOpen = null;
    /** Resuming (connection.js): the newest event id shown in the room; the room being gone back to; caught up. */
    this.lastId = null;
    this.resuming = null;
    this.catchingUp = false;
    this.connection.resumeWith(() => ({ room: this.room, after: this.room === null ? null : this.lastId }));
  }

  /** Whether the log follows new lines (shown as the log's data-following, "true" or "false"). */
  get following() {
    return this._following;
  }

  set following(value) {
    this._following = value;
    $("log").dataset.following = String(value);
  }

  start() {
    this.bind();
    this.listen();
    this.connection.open();
  }

  // -- wiring --------------------------------------------------------------------------------

  bind() {
    let action = "login";
    for (const button of [$("login-button"), $("register-button")]) {
      button.addEventListener("click", () => { action = button.value; });
    }
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("login-name").value.trim();
      const password = $("login-password").value;
      if (!name || !password) return;
      $("login-error").textContent = "";
      const submitter = event.submitter ? event.submitter.value : action;
      const send = () => this.connection.command(submitter === "register" ? "register" : "login", name, password);
      if (this.connection.isOpen) {
        send();
      } else {
        // Closed before logging in (the server's login timeout, a restart): connect again, then send.
        this.whenOpen = send;
        this.connection.open();
      }
    });
    $("create-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("create-name").value.trim();
      if (name && this.connection.command("create", name)) {
        $("create-name").value = "";
        this.roomsStale = true;
      }
    });
    $("say-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("say-input");
      if (!input.value) return;
      if (this.connection.line(input.value)) {
        this.showPending(input.value);
        if (/^\/(create|delete)(\s|$)/i.test(input.value)) this.roomsStale = true;
        this.typed.push(input.value);
        if (this.typed.length > TYPED_KEPT) this.typed.shift();
        this.typedAt = this.typed.length;
        input.value = "";
      }
    });
    $("say-input").addEventListener("keydown", (event) => this.recall(event));
    $("exit-room").addEventListener("click", () => this.connection.command("exit"));
    $("logout").addEventListener("click", () => this.logout());
    $("older").addEventListener("click", () => this.loadOlder());
    $("log").addEventListener("scroll", () => {
      const log = $("log");
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight <= BOTTOM_SLACK;
      // The user scrolled up if the log is above where the page last put it; back at the bottom: follow again.
      this.following = atBottom || (this.following && log.scrollTop >= this.autoTop);
      if (log.scrollTop <= TOP_SLACK) this.loadOlder();
    });
    // Lines added or grown (a file's progress), the log's box resized (the "Load older lines" button shown
    // above it, the window, a phone's keyboard): the bottom stays in view while following.
    const keep = () => { if (this.following) this.toBottom(); };
    new MutationObserver(keep).observe($("log"), { childList: true, subtree: true, characterData: true });
    new ResizeObserver(keep).observe($("log"));
    $("rooms-toggle").addEventListener("click", () => this.toggleRooms());
    $("refresh-rooms").addEventListener("click", () => this.refreshRooms());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && $("chat-view").classList.contains("show-rooms")) {
        this.toggleRooms(false);
        $("rooms-toggle").focus();
      }
    });
  }

  listen() {
    const c = this.connection;
    c.onState((state, detail) => this.showState(state, detail));
    c.on("login", (m) => this.loggedIn(m));
    c.on("logout", (m) => this.loggedOut(m));
    c.on("rooms", (m) => this.showRooms(m.rooms));
    c.on("entered", (m) => this.entered(m));
    c.on("history", (m) => this.history(m));
    c.on("events", (m) => this.events(m.events));
    c.on("left", () => this.left());
    c.on("removed", (m) => this.removed(m));
    c.on("reply", (m) => this.say(m.text, "reply"));
    c.on("notice", (m) => this.say(m.text, "notice"));
    c.on("error", (m) => this.problem(m.text));
    for (const type of ["reply", "notice", "error"]) c.on(type, (m) => { this.lastWord = m.text || ""; });
    c.on("private", (m) => this.private(m));
    c.on("help", (m) => this.help(m.commands));
  }

  showState(state, detail) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = {
      connecting: "Connecting…", open: "Connected", closed: "Disconnected", reconnecting: "Reconnecting…",
      reconnected: "Reconnected", expired: "Connected", slow: "Server not answering…",
    }[state] || state;
    if (state === "expired") {  // the session could not be resumed: the login form again, with the reason
      this.resuming = null;
      if (this.me !== null) this.loggedOut();
      $("login-error").textContent = detail || "";
    }
    const usable = state === "open" || state === "reconnected" || state === "expired" || state === "slow";
    for (const button of document.querySelectorAll("form button[type=submit]")) {
      // Logging in works from a closed connection too: it connects again first.
      const login = button.closest("#login-form") !== null;
      if (!button.closest("dialog")) button.disabled = login ? state === "connecting" : !usable;
    }
    if (usable && this.whenOpen) {
      const send = this.whenOpen;
      this.whenOpen = null;
      send();
    } else if (state === "closed") {
      this.whenOpen = null;
      if (this.me !== null) {
        // The server ended the session (close code 1000: replaced by a login elsewhere, quit, disconnected or
        // locked by an admin): the login form again, with the server's last word as the reason.
        const why = this.lastWord || "The server ended the session.";
        this.resuming = null;
        this.loggedOut();
        $("login-error").textContent = why;
      }
    }
  }

  // -- logging in and out ------------------------------------------------------------------------

  loggedIn(message) {
    if (message.resumed && this.room !== null) {  // back after a lost connection: the room comes next
      this.me = message.name;
      this.resuming = this.room;
      return;
    }
    this.me = message.name;
    $("login-password").value = "";
    $("login-error").textContent = "";
    $("me-name").textContent = message.name;
    $("me").hidden = false;
    $("logout").hidden = false;
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    this.menuMessage(message.text, "reply");
    this.showMenu();
  }

  logout() {
    if (this.room !== null) {
      this.pendingLogout = true;
      this.connection.command("exit");
    } else {
      this.connection.command("logout");
    }
  }

  loggedOut() {
    this.me = null;
    this.room = null;
    this.pendingJoin = null;
    this.pendingLogout = false;
    this.stopRoomsTimer();
    $("me").hidden = true;
    $("logout").hidden = true;
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    $("menu-message").replaceChildren();
    $("login-name").focus();
  }

  // -- the room list -------------------------------------------------------------------------------

  showMenu() {
    this.room = null;
    $("room-view").hidden = true;
    $("chat-view").classList.remove("in-room", "show-rooms");
    this.refreshRooms();
    this.startRoomsTimer();
    $("create-name").focus();
  }

  refreshRooms() {
    if (this.me !== null) this.connection.command("rooms");
  }

  startRoomsTimer() {
    this.stopRoomsTimer();
    this.roomsTimer = setInterval(() => {
      if (!$("rooms-panel").hidden && $("rooms-panel").offsetParent !== null) this.refreshRooms();
    }, ROOMS_REFRESH * 1000);
  }

  stopRoomsTimer() {
    if (this.roomsTimer !== null) clearInterval(this.roomsTimer);
    this.roomsTimer = null;
  }

  showRooms(rooms) {
    this.lastRooms = rooms;
    const list = $("room-list");
    const items = rooms.map((room) => {
      const join = el("button", "join", nameNode(room.name));
      join.type = "button";
      join.dataset.room = room.name;
      const current = room.name === this.room;
      if (current) join.setAttribute("aria-current", "true");
      join.addEventListener("click", () => this.join(room.name));
      const facts = el("span", "facts");
      // The room the user is in: its count as the page keeps it (joins and leaves seen), and nothing unread.
      const here = el("span", "members", `${current ? this.here : room.members} here`);
      facts.append(here);
      if (room.unread && !current) facts.append(" ", el("span", "unread", `${room.unread} unread`));
      if (room.invite_only) facts.append(" ", el("span", "invite-only", "invite-only"));
      if (room.secret) facts.append(" ", el("span", "secret", "secret"));
      const item = el("li", "room-item", join, " ", facts);
      item.dataset.room = room.name;
      if (room.topic) item.append(userText(room.topic, "topic"));
      if (this.me !== null && room.owner && room.owner.toLowerCase() === this.me.toLowerCase()) {
        const remove = el("button", "delete", "Delete");
        remove.type = "button";
        remove.setAttribute("aria-label", `Delete room ${room.name}`);
        remove.addEventListener("click", () => this.confirmDelete(room.name));
        item.append(remove);
      }
      return item;
    });
    list.replaceChildren(...items);
  }

  join(name) {
    if (this.room === name) {
      this.toggleRooms(false);
      $("say-input").focus();
      return;
    }
    if (this.room !== null) {
      this.pendingJoin = name;
      this.connection.command("exit");
    } else {
      this.connection.command("join", name);
    }
  }

  confirmDelete(name) {
    const dialog = $("confirm");
    $("confirm-text").replaceChildren("Delete the room ", nameNode(name), " and its history?");
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "yes" && this.connection.command("delete", name)) this.roomsStale = true;
    }, { once: true });
    dialog.showModal();
  }

  toggleRooms(show) {
    const view = $("chat-view");
    const open = show === undefined ? !view.classList.contains("show-rooms") : show;
    view.classList.toggle("show-rooms", open);
    $("rooms-toggle").setAttribute("aria-expanded", String(open));
    if (open) this.refreshRooms();
  }

  // -- a room ----------------------------------------------------------------------------------

  entered(message) {
    if (this.resuming === message.room) {  // the same room again: what was missed comes as its replay
      this.resuming = null;
      this.catchingUp = true;
      this.showHere(message.here);
      this.showTopic(message.topic);
      return;
    }
    this.lastId = null;
    this.room = message.room;
    this.older = null;
    this.loadingOlder = false;
    this.shown = new Set();
    $("room-name").textContent = message.room;
    this.showHere(message.here);
    this.showTopic(message.topic);
    $("log").replaceChildren();
    this.pending = [];
    this.following = true;
    $("older").hidden = true;
    $("room-view").hidden = false;
    $("chat-view").classList.add("in-room");
    this.toggleRooms(false);
    this.refreshRooms();
    $("say-input").focus();
    for (const item of document.querySelectorAll("#room-list .join")) {
      if (item.dataset.room === message.room) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
  }

  showHere(count) {
    this.here = count;
    $("room-here").textContent = `(${count} here)`;
    const item = this.room === null ? null : document.querySelector(`#room-list li[data-room="${CSS.escape(this.room)}"]`);
    if (item) {
      item.querySelector(".members").textContent = `${count} here`;
      const unread = item.querySelector(".unread");
      if (unread) unread.remove();
    }
  }

  showTopic(topic) {
    $("room-topic").textContent = topic || "";
    $("room-topic").hidden = !topic;
    // The room list's entry of the room the user is in shows it too (as showHere does for the count).
    const item = this.room === null ? null : document.querySelector(`#room-list li[data-room="${CSS.escape(this.room)}"]`);
    if (item) {
      const shown = item.querySelector(".topic");
      if (shown) shown.remove();
      if (topic) item.insertBefore(userText(topic, "topic"), item.querySelector(".delete"));
    }
  }

  history(message) {
    if (message.room !== this.room) return;
    if (message.replay && this.catchingUp) {
      this.catchingUp = false;
      // Lines sent before the connection dropped: those the server got come back in the catch-up; the rest
      // were lost with the connection.
      for (const e of message.events) {
        if ((e.kind === "say" || e.kind === "me") && e.sender === this.me && this.pending.length) {
          this.pending.shift().node.remove();
        }
      }
      for (const { node } of this.pending.splice(0)) {
        node.classList.add("error");
        node.querySelector(".sending").textContent = "not sent (the connection dropped): send it again";
      }
      if (message.older === null) {  // all that was missed: after the lines shown (none twice)
        for (const e of message.events) if (!this.shown.has(e.id)) this.append(this.remember(eventNode(e), e));
        return;
      }
      $("log").replaceChildren();  // more was missed than comes: start from it, older lines page back
      this.shown = new Set();
    }
    const nodes = message.events.filter((e) => !this.shown.has(e.id)).map((e) => this.remember(eventNode(e), e));
    if (!message.replay && !this.loadingOlder) {
      // An answer to /history typed by the user: shown where it was asked, as a marked block.
      this.append(el("div", "line system", `History of ${message.room}:`));
      for (const node of nodes) this.append(node);
      return;
    }
    if (message.replay) {
      for (const node of nodes) node.classList.add("old");
      for (const node of nodes) this.append(node);
    } else {
      const log = $("log");
      const before = log.scrollHeight;
      for (const node of nodes) node.classList.add("old");
      log.prepend(...nodes);
      log.scrollTop += log.scrollHeight - before;
      this.loadingOlder = false;
    }
    if (message.replay || this.older !== null) {
      this.older = message.older;
      $("older").hidden = this.older === null;
    }
  }

  remember(node, event) {
    this.shown.add(event.id);
    if (this.lastId === null || event.id > this.lastId) this.lastId = event.id;
    return node;
  }

  loadOlder() {
    if (this.room === null || this.older === null || this.loadingOlder) return;
    this.loadingOlder = true;
    this.following = false;  // reading back: older lines come above, and the view stays on them
    this.connection.command("history", `before ${this.older} ${OLDER_PAGE}`);
  }

  events(events) {
    for (const event of events) {
      if (event.room !== this.room || this.shown.has(event.id)) continue;
      if (FOLDED.has(event.kind) && event.sender === this.me) {  // (live only: a replay shows them all)
        this.remember(null, event);
        continue;
      }
      const own = (event.kind === "say" || event.kind === "me") && event.sender === this.me;
      if (own && this.pending.length) this.pending.shift().node.remove();
      this.append(this.remember(eventNode(event), event), own);
      if (event.kind === "topic") this.showTopic(event.text);
      if (event.kind === "join" && event.sender !== this.me) this.showHere(this.here + 1);
      if (event.kind === "leave") this.showHere(Math.max(1, this.here - 1));
      if (event.kind === "kick" && event.target !== this.me) {  // (a ban of a member is followed by its kick)
        this.showHere(Math.max(1, this.here - 1));
      }
    }
  }

  left() {
    this.room = null;
    if (this.removedText) {
      this.menuMessage(this.removedText, "notice");
      this.removedText = "";
    }
    if (this.pendingLogout) {
      this.pendingLogout = false;
      this.connection.command("logout");
      return;
    }
    this.showMenu();
    if (this.pendingJoin !== null) {
      const name = this.pendingJoin;
      this.pendingJoin = null;
      this.connection.command("join", name);
    }
  }

  removed(message) {
    this.say(message.text, "notice");
    this.removedText = message.text;
    this.connection.command("exit");
  }

  /** Up and Down in the message line bring back the lines typed before (as a shell does). */
  recall(event) {
    if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const input = $("say-input");
    const at = this.typedAt + (event.key === "ArrowUp" ? -1 : 1);
    if (at < 0 || at > this.typed.length) return;
    event.preventDefault();
    if (this.typedAt === this.typed.length) this.draft = input.value;
    this.typedAt = at;
    input.value = at === this.typed.length ? this.draft : this.typed[at];
  }

  /**
   * Append a line to the log, keeping the bottom in view while following (the user has not scrolled up);
   * `own` (the user's own line) scrolls to it and follows again. Past LOG_LINES lines the oldest room lines go
   * while following, and scrolling back loads them again.
   */
  append(node, own = false) {
    const log = $("log");
    if (own || log.scrollHeight <= log.clientHeight) this.following = true;  // (nothing to scroll: at the bottom)
    log.append(node);
    if (this.following) {
      this.trim();
      this.toBottom();
    }
  }

  /**
   * The user's line, shown at once, dimmed and marked "sending…", until the server's event for it comes
   * (events) or an error says it was refused (problem). A /command (not //) gets no pending line: its
   * answer is not a line of the room.
   */
  showPending(text) {
    if (this.room === null || (text[0] === "/" && text[1] !== "/" && !/^\/me\s/i.test(text))) return;
    const said = text.startsWith("//") ? text.slice(1) : text;
    const body = /^\/me\s/i.test(text) ? ["* ", nameNode(this.me), " ", userText(text.slice(4))]
      : [nameNode(this.me), ": ", userText(said)];
    const node = el("div", "line say pending", timeNode(Date.now() / 1000), " ", ...body, " ",
      el("span", "sending", "sending…"));
    this.pending.push({ text: said, node });
    this.append(node, true);
  }

  /** Scroll the log to its bottom (remembering where: the scroll event this causes is not the user's). */
  toBottom() {
    const log = $("log");
    log.scrollTop = log.scrollHeight;
    this.autoTop = log.scrollTop;
  }

  trim() {
    const log = $("log");
    let excess = log.childElementCount - LOG_LINES;
    if (excess <= 0) return;
    while (excess-- > 0) {
      const first = log.firstElementChild;
      if (first.dataset.id) this.shown.delete(Number(first.dataset.id));
      first.remove();
    }
    const oldest = log.querySelector(".line[data-id]");
    if (oldest) {
      this.older = Number(oldest.dataset.id);
      $("older").hidden = false;
    }
  }

  // -- answers -----------------------------------------------------------------------------------

  /** Show a line from the server (a reply, a notice): in the room's log, or at the room list. */
  say(text, kind) {
    if (this.me === null) {
      $("login-error").textContent = text;
    } else if (this.room !== null) {
      this.append(el("div", `line ${kind}`, userText(text)));
    } else {
      this.menuMessage(text, kind);
    }
    if (this.roomsStale && this.me !== null) {  // the answer to a create or delete: the list again
      this.roomsStale = false;
      this.refreshRooms();
    }
  }

  problem(text) {
    if (this.loadingOlder) this.loadingOlder = false;
    // A line refused (muted, too long, flooding, a command it was): not said, so no longer pending.
    if (this.pending.length) this.pending.shift().node.remove();
    if (this.resuming !== null) {  // logged in again, but the room is closed to us now (a ban, deleted)
      this.resuming = null;
      this.showMenu();
    }
    if (this.me === null) {
      $("login-error").textContent = text;
    } else {
      this.say(text, "error");
    }
  }

  menuMessage(text, kind, ...nodes) {
    const box = $("menu-message");
    box.append(el("p", `line ${kind}`, ...(nodes.length ? nodes : [userText(text)])));
    while (box.childElementCount > MENU_MESSAGES) box.firstElementChild.remove();
  }

  private(message) {
    const parts = message.sent
      ? [timeNode(message.at), " → ", nameNode(message.recipient), ": ", userText(message.text)]
      : [timeNode(message.at), " ", nameNode(message.sender), " → you: ", userText(message.text)];
    if (this.room !== null) {
      this.append(el("div", "line private", ...parts));
    } else {
      this.menuMessage("", "private", ...parts);
    }
  }

  help(commands) {
    for (const command of commands) {
      this.say(`${command.usage} — ${command.help}`, "reply");
    }
  }
}

const page = new Page();
page.start();

// files.js (file transfers) installs itself on this object: the connection, the room and a place in the
// message form (#file-hook) for its button; page.append(node) adds a line to the log.
export { page };
