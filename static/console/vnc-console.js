// The VNC console: noVNC (installed at set-up into static/novnc/).
import RFB from "../novnc/core/rfb.js";
import { connected, consolePage, disconnected, setStatus, socketUrl, takeEarlySocket } from "./console-page.js";

const screen = document.getElementById("vnc-screen");
const clipboardButton = document.getElementById("clipboard");
const clipboardPanel = document.getElementById("clipboard-panel");
const clipboardText = document.getElementById("clipboard-text");
const clipboardSend = document.getElementById("clipboard-send");

/** What console.clipboard allows, as the page shows it (the VM and the proxy enforce it). */
function clipboardPolicy(policy = "both") {
  const toVm = policy === "both" || policy === "to-vm";
  const fromVm = policy === "both" || policy === "from-vm";
  clipboardSend.disabled = !toVm;
  const words = { both: "both ways", "to-vm": "to the VM only", "from-vm": "from the VM only", off: "off" };
  document.getElementById("clipboard-policy").textContent = `(${words[policy] || policy}, set by the administrator)`;
  clipboardText.placeholder = [fromVm && "Text copied in the VM appears here", toVm && "text here is sent to the VM"]
    .filter(Boolean).join("; ") || "The clipboard is off for consoles";
}
clipboardButton.addEventListener("click", () => {
  const open = clipboardPanel.hidden;
  clipboardPanel.hidden = !open;
  clipboardButton.setAttribute("aria-expanded", String(open));
});
clipboardSend.addEventListener("click", () => {
  if (rfb && clipboardText.value) rfb.clipboardPasteFrom(clipboardText.value);
});
const ACTIVITY_EVERY = 15000; // ms: how often, at most, the page tells the portal the user is active

/** Tell the portal's proxy (not websockify, which would relay it to the VM) that the user
 * pressed keys or used the mouse: a text frame the proxy keeps to itself, for the idle limit. */
function reportActivity(socket) {
  let last = 0;
  const report = () => {
    if (socket.readyState !== WebSocket.OPEN || Date.now() - last < ACTIVITY_EVERY) return;
    last = Date.now();
    socket.send('{"activity":1}');
  };
  for (const type of ["keydown", "mousedown", "mousemove", "wheel"]) {
    screen.addEventListener(type, report, { capture: true, passive: true });
  }
}
let rfb = null;
let scaled = false;

const client = {
  connect(ticket) {
    // noVNC is handed the socket, so the page can read the proxy's close code: the one opened
    // while noVNC loaded, for the first ticket.
    const early = takeEarlySocket(ticket);
    const socket = early ? early.socket : new WebSocket(socketUrl(ticket), ["binary"]);
    if (!ticket.proxyUrl && !ticket.viewOnly) reportActivity(socket);
    const current = new RFB(screen, socket, { credentials: { password: ticket.password } });
    early?.replay(); // noVNC has attached its handlers
    current.scaleViewport = scaled;
    current.viewOnly = Boolean(ticket.viewOnly); // the proxy drops a watcher's input anyway
    clipboardPolicy(ticket.clipboard);
    current.addEventListener("clipboard", (event) => {
      // The VM's clipboard (its agent copied something): shown, for the user to copy.
      if (current === rfb) clipboardText.value = event.detail.text;
    });
    current.focusOnClick = true;
    current.addEventListener("connect", () => {
      connected();
      current.focus();
    });
    current.addEventListener("securityfailure", (event) => {
      if (current === rfb) setStatus("disconnected", `Disconnected: the VM refused the console password (${event.detail.reason || "security failure"}); press Reconnect.`);
    });
    current.addEventListener("credentialsrequired", () => {
      setStatus("disconnected", "Disconnected: the VM asked for credentials the ticket did not carry; press Reconnect.");
    });
    socket.addEventListener("close", (event) => {
      if (current === rfb && !statusIsFinal()) disconnected(event.code);
    });
    rfb = current;
  },
  disconnect() {
    const old = rfb;
    rfb = null;
    if (old) old.disconnect();
  },
  sendCtrlAltDel() {
    if (rfb) rfb.sendCtrlAltDel();
  },
  /** Key presses for "Type text": noVNC sends QEMU the scancode of `code` (its extended key
   * events), or the keysym to other servers. */
  pressKey(key, down) {
    if (rfb) rfb.sendKey(key.keysym, key.code, down);
  },
  setScale(on) {
    scaled = on;
    if (rfb) rfb.scaleViewport = on;
  },
  focus() {
    if (rfb) rfb.focus();
  },
};

function statusIsFinal() {
  return document.getElementById("status").textContent.includes("refused the console password");
}

consolePage(client);
