// The serial console: xterm.js (installed at set-up into static/xterm/) on a WebSocket that the
// portal bridges to the VM's serial port through libvirt. Binary frames both ways.
import {
  ENDS,
  closeReason,
  freshTicket,
  idleLimitFrom,
  markConnected,
  reconnectDelay,
  reconnectLimit,
  setStatus,
  socketUrl,
} from "./console-page.js";

import { gettext, interpolate } from "./i18n.js";
import "./style-nonce.js"; // before xterm.js is imported (below)

const { Terminal } = await import("../xterm/xterm.js");
const { FitAddon } = await import("../xterm/addon-fit.js");

const script = document.getElementById("console-script");
const takeOverButton = document.getElementById("take-over");
const mayTakeOver = script.dataset.mayTakeOver === "1";
const RECONNECT_CODES = new Set(ENDS.reconnect);
const LOG_LIMIT = 8 << 20; // bytes of output kept for "Download log"

const terminal = new Terminal({
  cursorBlink: true,
  scrollback: 10000,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
  fontSize: 14,
  // Programs in the guest may ask the terminal's size (CSI 18 t) as well as probing it with
  // the cursor; a serial line carries no other way to learn it.
  windowOptions: { getWinSizeChars: true },
});
// Screen reader mode (xterm.js keeps the visible text in an accessibility tree and announces
// new output): a toggle, remembered in this browser.
const READER_KEY = "serial-console.screen-reader";
const readerButton = document.getElementById("screen-reader");
function screenReader(on) {
  terminal.options.screenReaderMode = on;
  readerButton.setAttribute("aria-pressed", String(on));
  localStorage.setItem(READER_KEY, on ? "1" : "");
}
readerButton.addEventListener("click", () => {
  screenReader(readerButton.getAttribute("aria-pressed") !== "true");
  terminal.focus();
});
screenReader(localStorage.getItem(READER_KEY) === "1");
const fit = new FitAddon();
terminal.loadAddon(fit);
terminal.open(document.getElementById("terminal"));
fit.fit();
new ResizeObserver(() => fit.fit()).observe(document.getElementById("terminal-area"));

// Copy and paste with Ctrl+Shift+C / Ctrl+Shift+V, as in terminal emulators: plain Ctrl+C and
// Ctrl+V belong to the guest.
terminal.attachCustomKeyEventHandler((event) => {
  if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
  if (event.code === "KeyC" && terminal.hasSelection()) {
    navigator.clipboard.writeText(terminal.getSelection()).catch(() => {});
    event.preventDefault();
    return false;
  }
  return event.code !== "KeyV"; // leave it to the browser, whose paste event xterm.js takes
});

const log = [];
let logSize = 0;
function remember(bytes) {
  log.push(bytes);
  logSize += bytes.length;
  while (logSize > LOG_LIMIT && log.length > 1) logSize -= log.shift().length;
}

// Escape sequences (colours, cursor moves, terminal queries) do not belong in a text file.
// eslint-disable-next-line no-control-regex -- the escape sequences are what it removes
const ESCAPES = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[78=>cDEHM]/g;
document.getElementById("download-log").addEventListener("click", async () => {
  const text = (await new Blob(log).text()).replace(ESCAPES, "").replace(/\r+\n/g, "\n").replace(/\r/g, "");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  link.download = `${script.dataset.vmName}-serial-${stamp}.log`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
});

const encoder = new TextEncoder();
let socket = null;
let attempts = 0;
let lastEnd = 0; // the close code the page is reconnecting after

function showSize() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    setStatus("connected", interpolate(gettext("Connected · %(cols)s×%(rows)s"), { cols: terminal.cols, rows: terminal.rows }));
  }
}
terminal.onResize(showSize);
// While the old log is replayed, xterm.js answers the queries in it (where is the cursor, what
// terminal is this) as if the guest asked now: those answers go nowhere.
let replaying = 0;
terminal.onData((data) => {
  if (replaying && data.startsWith("\x1b")) return;
  if (socket?.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
});
terminal.onBinary((data) => {
  if (socket?.readyState === WebSocket.OPEN) socket.send(Uint8Array.from(data, (c) => c.charCodeAt(0)));
});

function connect(ticket, { takeover = false } = {}) {
  takeOverButton.hidden = true;
  const url = socketUrl(ticket) + (takeover ? "&takeover=1" : "");
  const current = new WebSocket(url);
  current.binaryType = "arraybuffer";
  socket = current;
  idleLimitFrom(ticket);
  current.addEventListener("open", () => {
    attempts = 0;
    markConnected(true);
    showSize();
    terminal.focus();
    // Nothing is typed for the user (a stray Enter could answer an installer's question).
    const words = gettext("[connected to the serial console; what the VM wrote before is not shown: press Enter for a fresh prompt]");
    terminal.write(`\x1b[2m${words}\x1b[0m\r\n`);
  });
  let reason = "";
  let endCode = null;
  current.addEventListener("message", (event) => {
    if (typeof event.data === "string") {
      // Why the portal is about to close the socket, in words (a close frame's reason is
      // dropped by some servers), and its close code (a close handshake that does not finish
      // reaches the page as 1006).
      ({ reason = "", code: endCode = null } = JSON.parse(event.data));
      return;
    }
    const bytes = new Uint8Array(event.data);
    remember(bytes);
    terminal.write(bytes);
  });
  current.addEventListener("close", (event) => {
    if (current === socket) closed(endCode ?? event.code, event.reason || reason);
  });
}

async function closed(code, reason) {
  markConnected(false);
  const why = reason || closeReason(code);
  setStatus("disconnected", interpolate(gettext("Disconnected: %(reason)s."), { reason: why }));
  const closedWords = interpolate(gettext("[serial console closed: %(reason)s]"), { reason: why });
  terminal.write(`\r\n\x1b[1;31m${closedWords}\x1b[0m\r\n`);
  if (code === ENDS.codes.SERIAL_BUSY && mayTakeOver) takeOverButton.hidden = false;
  if (RECONNECT_CODES.has(code) && attempts < reconnectLimit(code)) {
    attempts += 1;
    lastEnd = code;
    const words = gettext("Disconnected: %(reason)s. Reconnecting (attempt %(attempt)s)…");
    setStatus("connecting", interpolate(words, { reason: why, attempt: attempts }));
    await backOff();
    await reconnect();
  }
}

/** By the attempts made so far since the last close (console-page.js's reconnectDelay). */
function backOff() {
  return new Promise((resolve) => setTimeout(resolve, reconnectDelay(lastEnd, attempts)));
}

async function reconnect(options = {}) {
  if (socket && socket.readyState <= WebSocket.OPEN) {
    const old = socket;
    socket = null;
    old.close();
  }
  setStatus("connecting", gettext("Getting a fresh ticket…"));
  try {
    connect(await freshTicket(), options);
  } catch (error) {
    // A portal that answers "in a moment" (the VM moving, a worker restarting): try again.
    if (error.retryable && attempts < reconnectLimit(lastEnd)) {
      attempts += 1;
      setStatus("connecting", interpolate(gettext("%(error)s Trying again (attempt %(attempt)s)…"), { error: error.message, attempt: attempts }));
      await backOff();
      await reconnect(options);
      return;
    }
    setStatus("disconnected", interpolate(gettext("Cannot connect: %(error)s"), { error: error.message }));
  }
}

document.getElementById("reconnect").addEventListener("click", () => {
  attempts = 0;
  reconnect();
});
takeOverButton.addEventListener("click", () => reconnect({ takeover: true }));

/** What the guest printed before this page connected (virtlogd's serial log), dimmed. */
async function earlierOutput() {
  try {
    const response = await fetch(`${script.dataset.logUrl}?format=text&tail=65536`, { credentials: "same-origin" });
    if (!response.ok) return;
    const earlier = new Uint8Array(await response.arrayBuffer());
    if (!earlier.length) return;
    replaying += 1;
    terminal.write("\x1b[2m");
    terminal.write(earlier);
    const words = gettext("[earlier output, from the serial log; live from here]");
    terminal.write(`\x1b[0m\r\n\x1b[2m${words}\x1b[0m\r\n`, () => { replaying -= 1; });
  } catch (_) {
    // no log to show: the console itself still works
  }
}

try {
  const ticket = window.consoleTicket;
  await earlierOutput();
  connect(await ticket);
} catch (error) {
  setStatus("disconnected", interpolate(gettext("Cannot connect: %(error)s"), { error: error.message }));
}
