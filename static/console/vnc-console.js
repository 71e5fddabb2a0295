// The VNC console: noVNC (installed at set-up into static/novnc/).
import RFB from "../novnc/core/rfb.js";
import { connected, consolePage, disconnected, setStatus, socketUrl, takeEarlySocket } from "./console-page.js";
import { controlWatch } from "./control.js";
import { gettext, interpolate } from "./i18n.js";

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
  const words = { both: gettext("both ways"), "to-vm": gettext("to the VM only"), "from-vm": gettext("from the VM only"), off: gettext("off") };
  document.getElementById("clipboard-policy").textContent = interpolate(gettext("(%(policy)s, set by the administrator)"), { policy: words[policy] || policy });
  clipboardText.placeholder = [fromVm && gettext("Text copied in the VM appears here"), toVm && gettext("text here is sent to the VM")]
    .filter(Boolean).join("; ") || gettext("The clipboard is off for consoles");
}
clipboardButton.addEventListener("click", () => {
  const open = clipboardPanel.hidden;
  clipboardPanel.hidden = !open;
  clipboardButton.setAttribute("aria-expanded", String(open));
});
clipboardSend.addEventListener("click", () => {
  if (rfb && clipboardText.value) rfb.clipboardPasteFrom(clipboardText.value);
});

let rfb = null;
let scaled = false;
let fit = false;
let hasInput = null; // as console/control.py last said (null: as the ticket was issued)

// Control handed to or from this page: the proxy already passes or drops the input; the page
// stops sending it and shows what it may do.
controlWatch((input) => {
  hasInput = input;
  if (rfb) {
    rfb.viewOnly = !input;
    rfb.resizeSession = fit; // asks for the window's size now, if it may
  }
  document.getElementById("view-only-badge").hidden = input;
  for (const id of ["send-cad", "type-text", "send-keys", "clipboard"]) document.getElementById(id).hidden = !input;
});

const client = {
  connect(ticket) {
    // noVNC is handed the socket, so the page can read the proxy's close code: the one opened
    // while noVNC loaded, for the first ticket.
    const early = takeEarlySocket({ token: ticket.token });
    const socket = early ? early.socket : new WebSocket(socketUrl(ticket), ["binary"]);
    // No credentials: the portal's proxy authenticates to the VM itself and offers the page
    // VNC's security type None (console/proxy/rfb.py); it also sees the keys and the mouse,
    // for the idle limit.
    const current = new RFB(screen, socket);
    early?.replay(); // noVNC has attached its handlers
    current.scaleViewport = scaled;
    // QEMU passes SetDesktopSize to the display; the proxy drops it from a watcher.
    current.resizeSession = fit;
    current.viewOnly = hasInput === null ? Boolean(ticket.viewOnly) : !hasInput; // the proxy decides anyway
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
      const words = gettext("Disconnected: the console refused the connection (%(reason)s); press Reconnect.");
      if (current === rfb) setStatus("disconnected", interpolate(words, { reason: event.detail.reason || gettext("security failure") }));
    });
    socket.addEventListener("close", (event) => {
      if (current === rfb) disconnected(event.code);
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
  setScale(on) {
    scaled = on;
    if (rfb) rfb.scaleViewport = on;
  },
  setFit(on) {
    fit = on;
    if (rfb) rfb.resizeSession = on;
  },
  focus() {
    if (rfb) rfb.focus();
  },
};

consolePage(client);
