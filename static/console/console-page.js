// The console page's shared part: the connection settings, the toolbar and the status line.
// A protocol module (spice-console.js, vnc-console.js) supplies connect/disconnect/keys/scale.


// Why a console ended, by close code: rendered into the page from the portal's one vocabulary
// (console/errors.py, End), with the codes after which the page reconnects by itself, with a
// fresh ticket (the portal worker went away, or the proxy was busy: another worker takes it).
export const ENDS = JSON.parse(document.getElementById("console-ends").textContent);
const RECONNECT_CODES = new Set(ENDS.reconnect);
const RECONNECT_ATTEMPTS = 8; // 0.25 s doubling up to 4 s: about 20 s in all

import { gettext, interpolate } from "./i18n.js";

// The VM's states as the portal reports them (the state URL), in the page's language.
const STATE_WORDS = {
  running: gettext("running"), paused: gettext("paused"), "shutting down": gettext("shutting down"),
  "shut off": gettext("shut off"), crashed: gettext("crashed"), suspended: gettext("suspended"),
  missing: gettext("missing"), unknown: gettext("unknown"),
};

const script = document.getElementById("console-script");
const statusLine = document.getElementById("status");
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

export function setStatus(kind, text) {
  statusLine.className = `status ${kind}`;
  statusLine.textContent = text;
}

export function closeReason(code) {
  return ENDS.advice[code] || interpolate(gettext("the connection closed (code %(code)s)"), { code });
}

/** The WebSocket URL for a ticket (ticket-prefetch.js, which every console page loads first). */
export function socketUrl(ticket) {
  return window.consoleSocketUrl(ticket);
}

/** A socket ticket-prefetch.js opened for `ticket` (or for the WebSocket `url`) while the
 * client loaded, if one is still usable: `{socket, replay}`, where `replay()`, called once the
 * client has set the socket's onmessage, hands it what arrived meanwhile, in order. Otherwise
 * null: open a socket as usual. */
export function takeEarlySocket({ token, url } = {}) {
  const sockets = window.consoleEarlySockets || [];
  while (sockets.length) {
    const early = sockets.shift();
    if ((token && early.token !== token) || (url && early.url !== url) || early.socket.readyState > WebSocket.OPEN) {
      early.socket.close(); // a closed one's close code went unheard: a fresh socket hears it again
      continue;
    }
    return {
      socket: early.socket,
      replay() {
        for (const event of early.received.splice(0)) early.socket.onmessage?.(event);
      },
    };
  }
  return null;
}

/** Close the early sockets no client took. */
export function dropEarlySockets() {
  for (const early of (window.consoleEarlySockets || []).splice(0)) early.socket.close();
}

/** A fresh ticket; a failure says whether trying again may help (no portal answer, a 5xx). */
export async function freshTicket() {
  let response;
  try {
    response = await fetch(script.dataset.ticketUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
      credentials: "same-origin",
    });
  } catch (_) {
    throw Object.assign(new Error(gettext("the portal does not answer")), { retryable: true });
  }
  const answered = interpolate(gettext("the portal answered %(status)s"), { status: response.status });
  const body = await response.json().catch(() => ({ error: answered }));
  if (!response.ok) {
    // Step-up: a fresh code first (console.twofactor); its page brings the user back here.
    if (body.code === "second_factor_required" && body.verifyUrl) window.location.assign(body.verifyUrl);
    const error = new Error(body.error || answered);
    throw Object.assign(error, { retryable: response.status >= 500 });
  }
  return body;
}

const MOVE_SECONDS = 360; // MIGRATION_TIMEOUT_SECONDS (300) and a minute

/** How long to wait before reconnect attempt `attempt` (1, 2, …) after the close `code`: a VM
 * that moved answers on its new host within moments, so the portal is asked at once, then every
 * 0.2 s for 5 s, then every second for as long as a move may take (a SPICE console closes as
 * the move starts); otherwise 0.25 s doubling up to 4 s. */
export function reconnectDelay(code, attempt) {
  if (code === ENDS.codes.VM_MOVED) return attempt === 1 ? 0 : attempt <= 25 ? 200 : 1000;
  return Math.min(4000, 250 * 2 ** (attempt - 1));
}

export function reconnectLimit(code) {
  return code === ENDS.codes.VM_MOVED ? 25 + MOVE_SECONDS : RECONNECT_ATTEMPTS;
}

let reconnect = null; // set by consolePage: connect again with a fresh ticket
let reconnectAttempts = 0;

// The idle limit (console.idleTimeoutMinutes) the ticket carries: the portal ends a console
// with no key press or mouse move for that long; warn a minute before.
let idleLimit = 0;
let lastInput = Date.now();
let isConnected = false;
let idleWarned = false;

/** The user pressed a key or used the mouse on the console. */
export function inputSeen() {
  lastInput = Date.now();
  if (idleWarned && isConnected) {
    idleWarned = false;
    setStatus("connected", gettext("Connected"));
  }
}

/** Whether the console is connected now. */
export function consoleConnected() {
  return isConnected;
}

export function markConnected(flag) {
  isConnected = flag;
  idleWarned = false;
}

export function idleLimitFrom(ticket) {
  idleLimit = (ticket.idleTimeoutSeconds || 0) * 1000;
  lastInput = Date.now();
}

document.addEventListener("keydown", inputSeen, true);

// The way out of the screen's focus trap: every key typed on the screen goes to the VM, Tab
// included, so Ctrl+Alt+Shift+T (said to screen readers by the screen's description, and in
// the README) moves the focus to the toolbar's first control. The clients release the keys
// they had pressed on the VM when the screen loses the focus.
export const TOOLBAR_KEY = { ctrlKey: true, altKey: true, shiftKey: true, code: "KeyT" };
window.addEventListener("keydown", (event) => {
  if (!Object.entries(TOOLBAR_KEY).every(([name, value]) => event[name] === value)) return;
  event.preventDefault();
  event.stopImmediatePropagation();
  document.querySelector("#toolbar a, #toolbar button:not([hidden])")?.focus();
}, true);
for (const area of document.querySelectorAll("#screen-area, #terminal-area")) {
  for (const type of ["mousemove", "mousedown", "wheel", "touchstart"]) {
    area.addEventListener(type, inputSeen, { capture: true, passive: true });
  }
}
setInterval(() => {
  if (!idleLimit || !isConnected) return;
  const left = idleLimit - (Date.now() - lastInput);
  if (left > 0 && left <= 60000) {
    idleWarned = true;
    const words = gettext("Idle: this console closes in %(seconds)s s; press a key or move the mouse to keep it.");
    setStatus("connecting", interpolate(words, { seconds: Math.ceil(left / 1000) }));
  }
}, 1000);

export function connected() {
  reconnectAttempts = 0;
  isConnected = true;
  idleWarned = false;
  setStatus("connected", gettext("Connected"));
}

/** Explain a disconnect in words, asking the portal about the VM's state when it helps; after a
 * lost worker, reconnect by itself (a fresh ticket, through whichever worker answers). */
export async function disconnected(code) {
  isConnected = false;
  console.info(`console socket closed with code ${code}`);
  setStatus("disconnected", interpolate(gettext("Disconnected: %(reason)s."), { reason: closeReason(code) }));
  while (RECONNECT_CODES.has(code) && reconnect && reconnectAttempts < reconnectLimit(code)) {
    reconnectAttempts += 1;
    const delay = reconnectDelay(code, reconnectAttempts);
    const words = gettext("Disconnected: %(reason)s. Reconnecting (attempt %(attempt)s)…");
    setStatus("connecting", interpolate(words, { reason: closeReason(code), attempt: reconnectAttempts }));
    await new Promise((resolve) => setTimeout(resolve, delay));
    const outcome = await reconnect();
    if (outcome !== "retry") return;
  }
  const { CONSOLE_ENDED, UNREACHABLE, CONNECTION_LOST } = ENDS.codes;
  if (code !== CONSOLE_ENDED && code !== UNREACHABLE && code !== CONNECTION_LOST) return;
  // A VM being shut down closes its console a moment before libvirt reports it stopped.
  for (let attempt = 0; attempt < 10; attempt++) {
    let state;
    try {
      const response = await fetch(script.dataset.stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      ({ state } = await response.json());
    } catch (_) {
      return; // keep the close code's explanation
    }
    if (state === "shutting down") {
      setStatus("disconnected", gettext("Disconnected: the VM is shutting down."));
    } else if (state && state !== "running") {
      const words = gettext("Disconnected: the VM is %(state)s. Start it from its page, then press Reconnect.");
      setStatus("disconnected", interpolate(words, { state: STATE_WORDS[state] || state }));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Post a toolbar form to the portal: its JSON answer, or {error} in words. */
async function postForm(form, body = new FormData(form)) {
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": body.get("csrfmiddlewaretoken") },
    });
    return await response.json();
  } catch (_) {
    return { error: gettext("the portal did not answer; try again") };
  }
}

const KEY_NAMES = {
  Escape: "esc", Backspace: "backspace", Tab: "tab", Enter: "enter", Space: "space",
  Delete: "delete", Insert: "insert", Home: "home", End: "end", PageUp: "pageup",
  PageDown: "pagedown", ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right",
  PrintScreen: "printscreen", ContextMenu: "menu",
};

/** The portal's name (console/keyboard.py) of the key at `code` (KeyboardEvent.code), or null. */
function keyName(code) {
  if (/^Key[A-Z]$/.test(code)) return code.slice(3).toLowerCase();
  if (/^(Digit|Numpad)[0-9]$/.test(code)) return code.slice(-1);
  if (/^F([1-9]|1[0-2])$/.test(code)) return code.toLowerCase();
  return KEY_NAMES[code] ?? null;
}

/** Sticky modifiers: toggled on in the toolbar, they are held with the next key pressed on the
 * console, which the portal presses (libvirt's send-key: the same for VNC and SPICE) instead of
 * the client; then they let go. Keys typed into the toolbar's own fields are left alone. */
function stickyModifiers(client, keysForm) {
  const buttons = [...keysForm.querySelectorAll("button[data-modifier]")];
  const held = () => buttons.filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => b.dataset.modifier);
  const release = () => buttons.forEach((b) => b.setAttribute("aria-pressed", "false"));
  const status = () => setStatus(isConnected ? "connected" : "disconnected", held().length
    ? interpolate(gettext("%(keys)s held: press a key on the VM (click it again to let go)"), { keys: held().join("+") })
    : gettext("Connected"));
  for (const button of buttons) {
    button.addEventListener("click", () => {
      button.setAttribute("aria-pressed", String(button.getAttribute("aria-pressed") !== "true"));
      status();
      client.focus();
    });
  }
  const swallowed = new Set(); // keys whose keyup the client must not see either
  window.addEventListener("keydown", async (event) => {
    const modifiers = held();
    const name = keyName(event.code);
    if (!modifiers.length || !name || event.target.closest?.("#toolbar, .toolbar, form")) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    swallowed.add(event.code);
    release();
    inputSeen();
    const body = new FormData(keysForm);
    body.set("keys", [...modifiers, name].join("+"));
    const answer = await postForm(keysForm, body);
    setStatus(isConnected ? "connected" : "disconnected",
      answer.error
        ? interpolate(gettext("Not pressed: %(error)s"), { error: answer.error })
        : interpolate(gettext("Pressed %(keys)s"), { keys: [...modifiers, name].join("+") }));
  }, true);
  window.addEventListener("keyup", (event) => {
    if (!swallowed.delete(event.code)) return;
    event.preventDefault();
    event.stopImmediatePropagation();
  }, true);
}

// "Resize VM to window": the VM's screen takes the size of the page's screen area, where the
// VM can follow (VNC: a virtio-gpu display, said by the page; SPICE: the guest's agent, said
// by spice-console.js once connected). On by default there; the choice is remembered.
const FIT_KEY = "console-fit";
const fitButton = document.getElementById("fit"); // not on the serial console's page
let fitAvailable = fitButton?.dataset.available === "1";
let fitClient = null;
const fitWanted = () => localStorage.getItem(FIT_KEY) !== "off";

function fitShow() {
  if (!fitButton) return;
  const on = fitAvailable && fitWanted();
  fitButton.setAttribute("aria-pressed", String(on));
  fitButton.setAttribute("aria-disabled", String(!fitAvailable));
  fitButton.title = fitAvailable ? gettext("The VM's screen takes the size of the window") : fitButton.dataset.whyNot;
  fitClient?.setFit(on);
}

/** Whether the VM's screen can follow the window now (spice-console.js: the agent came or went). */
export function fitAvailability(available) {
  fitAvailable = available;
  fitShow();
}

/** Wire the toolbar to a protocol client and connect with the ticket asked for at page load. */
export async function consolePage(client) {
  const screenArea = document.getElementById("screen-area");
  let ticket;

  document.getElementById("send-cad").addEventListener("click", () => client.sendCtrlAltDel());
  const keysForm = document.getElementById("send-keys");
  keysForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    client.focus();
    inputSeen();
    const answer = await postForm(keysForm);
    if (answer.error) setStatus(isConnected ? "connected" : "disconnected", interpolate(gettext("Not pressed: %(error)s"), { error: answer.error }));
  });
  stickyModifiers(client, keysForm);
  const typeForm = document.getElementById("type-text");
  typeForm.addEventListener("submit", async (event) => {
    // Typed by the portal through libvirt, in the guest's layout: a character the layout
    // lacks refuses the whole text before any key is pressed.
    event.preventDefault();
    const input = document.getElementById("type-text-input");
    const body = new FormData(typeForm); // taken before the field is emptied
    input.value = "";
    client.focus();
    inputSeen();
    const answer = await postForm(typeForm, body);
    if (answer.error) setStatus(isConnected ? "connected" : "disconnected", interpolate(gettext("Not typed: %(error)s"), { error: answer.error }));
  });
  document.getElementById("fullscreen").addEventListener("click", async () => {
    if (document.fullscreenElement) {
      document.exitFullscreen();
    } else {
      await document.body.requestFullscreen().catch(() => {});
      // In fullscreen, Chromium's Keyboard Lock lets Ctrl+W, Ctrl+T and Alt+Tab reach the VM
      // (holding Esc leaves); other browsers keep them: the Keys menu presses them.
      const locked = await navigator.keyboard?.lock?.().then(
        () => true,
        () => false,
      );
      const note = locked
        ? gettext("Fullscreen: the browser's shortcuts (Ctrl+W, Ctrl+T, Alt+Tab) go to the VM; hold Esc to leave.")
        : gettext("Fullscreen: this browser keeps Ctrl+W, Ctrl+T and Alt+Tab; press them from the Keys menu.");
      if (document.fullscreenElement) setStatus(isConnected ? "connected" : "connecting", note);
    }
    client.focus();
  });
  fitButton.addEventListener("click", () => {
    if (!fitAvailable) {
      setStatus(isConnected ? "connected" : "connecting", fitButton.dataset.whyNot);
    } else {
      localStorage.setItem(FIT_KEY, fitWanted() ? "off" : "on");
      fitShow();
    }
    client.focus();
  });
  fitClient = client;
  fitShow();
  const scaleButton = document.getElementById("scale");
  const scale = (on) => {
    scaleButton.setAttribute("aria-pressed", String(on));
    screenArea.classList.toggle("scaled", on);
    client.setScale(on);
  };
  scaleButton.addEventListener("click", () => {
    scale(scaleButton.getAttribute("aria-pressed") !== "true");
    client.focus();
  });
  // On a phone or a small tablet the screen is scaled to the window from the start (a tap is a
  // click, noVNC's gestures scroll and right-click; the Type text field brings up the
  // on-screen keyboard).
  if (window.matchMedia("(max-width: 48rem)").matches) scale(true);
  reconnect = async () => {
    setStatus("connecting", gettext("Closing the old connection…"));
    await client.disconnect();
    setStatus("connecting", gettext("Getting a fresh ticket…"));
    try {
      ticket = await freshTicket();
    } catch (error) {
      setStatus("disconnected", interpolate(gettext("Cannot reconnect: %(error)s"), { error: error.message }));
      return error.retryable ? "retry" : "failed";
    }
    setStatus("connecting", gettext("Connecting…"));
    idleLimitFrom(ticket);
    client.connect(ticket);
    return "connecting";
  };
  document.getElementById("reconnect").addEventListener("click", () => {
    reconnectAttempts = 0;
    reconnect();
  });
  try {
    ticket = await window.consoleTicket;
  } catch (error) {
    setStatus("disconnected", interpolate(gettext("Cannot connect: %(error)s"), { error: error.message }));
    return;
  }
  idleLimitFrom(ticket);
  client.connect(ticket);
}
