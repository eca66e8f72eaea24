// Files from and to the browser (docs/PROTOCOL.md, "Files in the browser").
//
// Sending: a file picked with the "Send a file" button (#file-input) or dropped on the room is hashed
// (SHA-256), offered with the send command, then sent as binary messages (ID, "\n", at most 64 KiB), each
// only when the socket's send buffer has room, and ended with {"type": "done"}. Its line in the log has a
// <progress> (bytes given to the socket minus what it still buffers) and a Cancel button.
// Receiving: a {"type": "file"} message is fetched from /files/ID with its ticket in the Authorization
// header (never in a URL), hashed, and only when the SHA-256 matches offered as a Save link
// (<a download href=blob:...>) marked "verified".
//
// Hashing: crypto.subtle.digest where the page is a secure context (https, or http from localhost /
// 127.0.0.1), else js-sha256 (vendored: sha256.min.mjs, MIT), fed the file in 4 MiB slices.
// Names and sizes users chose are shown as text (textContent), never as HTML.

import { page } from "./app.js";
import { sha256 as jsSha256 } from "./sha256.min.mjs";

/** Bytes of a file per binary message (the protocol's largest frame). */
const FRAME = 65536;
/** The socket's send buffer is kept under this many bytes while a file is sent (it is not read again till then). */
const BUFFER_HIGH = 1024 * 1024;
/** Bytes of a file hashed at once by the streaming hash. */
const HASH_SLICE = 4 * 1024 * 1024;
/** Milliseconds between looks at a full send buffer. */
const DRAIN_POLL = 25;
/** Bytes of received files kept in memory for their Save links; the oldest go first past it. */
const KEPT_MAX = 512 * 1024 * 1024;

const $ = (id) => document.getElementById(id);

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  return node;
}

/** A file name or another user's text, its direction its own. */
function textNode(text, className = "text") {
  const node = el("bdi", className);
  node.textContent = text;
  return node;
}

/** 1536 -> "1.5 KiB" (chatd.wire.human_size). */
export function humanSize(size) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let scaled = size;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${scaled} B` : `${scaled.toFixed(1)} ${units[unit]}`;
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The SHA-256 of a Blob (or File) as 64 lowercase hex digits: crypto.subtle where the page is a secure context
 * (it reads the whole blob into one buffer), else js-sha256 fed slice by slice (`secure` false forces it).
 */
export async function sha256Hex(blob, secure = globalThis.isSecureContext) {
  if (secure && globalThis.crypto && crypto.subtle) {
    return hex(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
  }
  const hash = jsSha256.create();
  for (let start = 0; start < blob.size; start += HASH_SLICE) {
    hash.update(await blob.slice(start, start + HASH_SLICE).arrayBuffer());
  }
  return hash.hex();
}

/** A line of the log for one transfer: the text, a progress bar with its label, and buttons. */
class TransferLine {
  constructor(kind, ...parts) {
    const now = new Date();
    const at = el("time", "at", now.toLocaleTimeString());
    at.dateTime = now.toISOString();
    this.node = el("div", `line file transfer ${kind}`, at, " ");
    this.text = el("span", "what", ...parts);
    this.bar = el("progress", "bar");
    this.bar.max = 1;
    this.bar.value = 0;
    this.label = el("span", "progress-label");
    this.state = el("span", "state");
    this.node.append(this.text, " ", this.bar, " ", this.label, " ", this.state);
    this.bar.setAttribute("aria-label", this.text.textContent);
    page.append(this.node);
  }

  progress(done, total) {
    this.bar.max = Math.max(total, 1);
    this.bar.value = Math.min(done, total);
    const percent = total ? Math.floor((100 * Math.min(done, total)) / total) : 100;
    this.label.textContent = `${humanSize(Math.min(done, total))} of ${humanSize(total)} (${percent}%)`;
  }

  finish(text, kind) {
    this.bar.hidden = true;
    this.label.textContent = "";
    this.state.textContent = text;
    this.node.dataset.state = kind;
  }
}

/** One file being sent: hashed, offered, framed, finished. */
class Upload {
  constructor(files, file) {
    this.files = files;
    this.file = file;
    this.id = null;
    this.sent = 0;
    this.over = false;
    this.line = new TransferLine("upload", "Sending ", textNode(file.name, "file-name"), ` (${humanSize(file.size)})`);
    this.cancel = el("button", "cancel", "Cancel");
    this.cancel.type = "button";
    this.cancel.setAttribute("aria-label", `Cancel sending ${file.name}`);
    this.cancel.addEventListener("click", () => this.abandon());
    this.line.node.append(" ", this.cancel);
    this.line.progress(0, file.size);
    this.line.state.textContent = "checking…";
  }

  async start() {
    try {
      this.digest = await sha256Hex(this.file);
    } catch (error) {
      this.fail(`could not read the file (${error.message || error})`);
      return;
    }
    if (this.over) return;
    this.line.state.textContent = "offering…";
    this.files.offer(this);
  }

  /** The server's answer to the offer: {"state": "ready", "id"} or a refusal. */
  ready(id) {
    this.id = id;
    this.line.node.dataset.file = id;
    this.line.state.textContent = "sending…";
    this.pump();
  }

  socket() {
    const socket = page.connection.socket;
    return socket && socket.readyState === WebSocket.OPEN ? socket : null;
  }

  async pump() {
    const header = new TextEncoder().encode(`${this.id}\n`);
    while (!this.over && this.sent < this.file.size) {
      const socket = this.socket();
      if (!socket) {
        this.fail("the connection was lost");
        return;
      }
      if (socket.bufferedAmount > BUFFER_HIGH) {
        this.showProgress(socket);
        await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL));
        continue;
      }
      const chunk = new Uint8Array(await this.file.slice(this.sent, this.sent + FRAME).arrayBuffer());
      if (this.over) return;
      const frame = new Uint8Array(header.length + chunk.length);
      frame.set(header);
      frame.set(chunk, header.length);
      socket.send(frame);
      this.sent += chunk.length;
      this.showProgress(socket);
    }
    if (this.over) return;
    page.connection.send({ type: "done", id: this.id, sha256: this.digest });
    this.line.state.textContent = "checking on the server…";
    this.drain();
  }

  /** Keep the bar moving while the last frames leave the send buffer. */
  drain() {
    const socket = this.socket();
    if (this.over || !socket) return;
    this.showProgress(socket);
    if (socket.bufferedAmount > 0) setTimeout(() => this.drain(), DRAIN_POLL * 4);
  }

  showProgress(socket) {
    this.line.progress(Math.max(0, this.sent - socket.bufferedAmount), this.file.size);
  }

  done(message) {
    this.end();
    this.line.progress(this.file.size, this.file.size);
    const people = message.recipients === 1 ? "1 person" : `${message.recipients} people`;
    // (elsewhere: the room's members on other nodes of the server, offered the file by their node)
    const there = message.elsewhere ? ` here, offered to ${message.elsewhere} on other nodes` : "";
    this.line.finish(`sent to ${people}${there} (SHA-256 verified)`, "done");
  }

  fail(text) {
    if (this.over) return;
    this.end();
    this.line.finish(`not sent: ${text}`, "failed");
  }

  abandon() {
    if (this.over) return;
    if (this.id !== null) page.connection.send({ type: "cancel", id: this.id });
    this.fail("cancelled");
  }

  end() {
    this.over = true;
    this.cancel.remove();
    this.files.forget(this);
  }
}

/** One file shared with this session: fetched with its ticket, checked, then offered to save. */
class Download {
  constructor(files, message) {
    this.files = files;
    this.message = message;
    this.url = null;
    this.line = new TransferLine("download", textNode(message.sender, "name"), " shared ",
      textNode(message.name, "file-name"), ` (${humanSize(message.size)})`);
    this.line.node.dataset.file = message.id;
    this.line.progress(0, message.size);
    this.line.state.textContent = "downloading…";
    this.over = false;
  }

  async start() {
    const { id, ticket, size } = this.message;
    let blob;
    try {
      const response = await fetch(`/files/${encodeURIComponent(id)}`, {
        headers: { Authorization: `Bearer ${ticket}` }, cache: "no-store", credentials: "omit",
      });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const reader = response.body.getReader();
      const parts = [];
      let received = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        received += value.length;
        this.line.progress(received, size);
      }
      blob = new Blob(parts, { type: "application/octet-stream" });
    } catch (error) {
      if (!this.over) this.line.finish(`could not be downloaded (${error.message || error})`, "failed");
      return;
    }
    this.line.state.textContent = "checking…";
    const digest = await sha256Hex(blob);
    if (digest !== this.message.sha256 || blob.size !== size) {
      this.line.finish(`discarded: its SHA-256 did not match (got ${digest.slice(0, 16)}…, expected `
        + `${this.message.sha256.slice(0, 16)}…)`, "failed");
      return;
    }
    this.over = true;
    const save = el("a", "save", "Save");
    this.url = save.href = URL.createObjectURL(blob);
    save.download = this.message.name;
    save.setAttribute("aria-label", `Save ${this.message.name}`);
    this.line.finish("SHA-256 verified ", "verified");
    this.line.state.append(save);
    this.files.keep(this);
  }

  /** Let go of the file in memory (its Save link goes). */
  release() {
    if (this.url === null) return;
    URL.revokeObjectURL(this.url);
    this.url = null;
    this.line.state.querySelector(".save")?.remove();
    this.line.state.append("(no longer kept: ask the sender again)");
  }

  gone(text) {
    if (this.over) return;
    this.over = true;
    this.line.finish(`no longer available: ${text}`, "failed");
  }
}

class Files {
  constructor() {
    /** Uploads hashed and offered, waiting for the answer to their send command (answered in order). */
    this.offered = [];
    /** Uploads under way, by ID. */
    this.uploads = new Map();
    this.downloads = new Map();
    /** Verified downloads whose Blob is kept, oldest first. */
    this.kept = [];
  }

  /** Keep `download`'s Blob; let go of those whose line left the page, then of the oldest past KEPT_MAX. */
  keep(download) {
    this.kept.push(download);
    this.kept = this.kept.filter((d) => {
      if (d.line.node.isConnected) return true;
      d.release();
      this.downloads.delete(d.message.id);
      return false;
    });
    let total = this.kept.reduce((sum, d) => sum + d.message.size, 0);
    while (total > KEPT_MAX && this.kept.length > 1) {
      const oldest = this.kept.shift();
      total -= oldest.message.size;
      oldest.release();
    }
  }

  install() {
    const hook = $("file-hook");
    const input = el("input", "file-input");
    input.type = "file";
    input.id = "file-input";
    input.multiple = true;
    const label = el("label", "file-button", "Send a file");
    label.htmlFor = "file-input";
    hook.append(input, label);
    input.addEventListener("change", () => {
      this.send(input.files);
      input.value = "";
    });
    this.dropZone($("room-view"));
    const c = page.connection;
    c.on("upload", (m) => this.answer(m));
    c.on("file", (m) => this.receive(m));
    c.on("file_gone", (m) => this.downloads.get(m.id)?.gone(m.text));
    c.on("error", (m) => this.refused(m.text));
    c.onState((state) => {
      if (state !== "closed" && state !== "reconnecting") return;  // (the server ended the uploads with the session)
      const lost = [...this.offered, ...this.uploads.values()];
      this.offered = [];
      for (const upload of lost) upload.fail("the connection was lost");
    });
  }

  dropZone(zone) {
    const hint = el("div", "drop-hint", "Drop files here to send them to the room");
    hint.setAttribute("aria-hidden", "true");
    zone.append(hint);
    let depth = 0;
    const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
    zone.addEventListener("dragenter", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth += 1;
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("dropping");
    });
    zone.addEventListener("drop", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dropping");
      this.send(event.dataTransfer.files);
    });
  }

  send(fileList) {
    if (page.room === null) return;
    for (const file of Array.from(fileList || [])) new Upload(this, file).start();
  }

  /** Offer a hashed upload: one offer waits for its answer at a time, so answers match offers. */
  offer(upload) {
    this.offered.push(upload);
    if (this.offered.length === 1) this.offerNext();
  }

  offerNext() {
    const next = this.offered[0];
    if (next && !page.connection.command("send", String(next.file.size), next.file.name)) {
      next.fail("not connected to the server");
    }
  }

  answer(message) {
    if (message.state === "ready" || (message.state === "failed" && message.id === null)) {
      const upload = this.offered.shift();
      if (upload && upload.over) {
        // Cancelled while its offer was on its way: the server's upload is cancelled now.
        if (message.state === "ready") page.connection.send({ type: "cancel", id: message.id });
      } else if (upload) {
        if (message.state === "ready") {
          this.uploads.set(message.id, upload);
          upload.ready(message.id);
        } else {
          upload.fail(message.text);
        }
      }
      this.offerNext();
      return;
    }
    const upload = this.uploads.get(message.id);
    if (!upload) return;
    if (message.state === "done") upload.done(message);
    else if (message.state === "failed") upload.fail(message.text);
    else if (message.state === "undelivered") page.append(el("div", "line file error", textNode(message.text)));
  }

  /** An error while an offer waits is its answer (not in a room, muted, files off). */
  refused(text) {
    if (!this.offered.length) return;
    this.offered.shift().fail(text);
    this.offerNext();
  }

  /** An upload is over: out of the map; out of the queue unless its offer is on its way (index 0). */
  forget(upload) {
    if (upload.id !== null && this.uploads.get(upload.id) === upload) this.uploads.delete(upload.id);
    const waiting = this.offered.indexOf(upload);
    if (waiting > 0) this.offered.splice(waiting, 1);
  }

  receive(message) {
    if (message.room !== page.room) return;
    const download = new Download(this, message);
    this.downloads.set(message.id, download);
    download.start();
  }
}

export const files = new Files();
files.install();
