// The SPICE console: spice-html5 (installed at set-up into static/spice-html5/).
import * as SpiceHtml5 from "../spice-html5/main.js";
import { gettext } from "./i18n.js";
import {
  connected, consolePage, disconnected, dropEarlySockets, fitAvailability, setStatus, socketUrl, takeEarlySocket,
} from "./console-page.js";

// spice-html5 opens a socket per channel and does not close them all when stopped (0.3.0 keeps
// the playback channel where the cursor channel should be, and so never closes the cursor's).
// A socket left open keeps the old SPICE client alive in QEMU, which then drops the new one.
// So every socket is tracked, and Reconnect waits until the old ones are closed.
const openSockets = new Set();

function track(socket) {
  openSockets.add(socket);
  socket.addEventListener("close", () => openSockets.delete(socket));
}

const SPICE_CHANNEL_PLAYBACK = 5; // SpiceLinkMess.channel_type, at byte 20 of a channel's first message
const BrowserWebSocket = window.WebSocket;
window.WebSocket = class TrackedWebSocket extends BrowserWebSocket {
  constructor(url, protocols) {
    // The page opened the first sockets while spice-html5 loaded (the main channel's, then the
    // display channel's): take them, in order, for the same URL. A socket already open gets
    // its "open" event again, once spice-html5 listens for it.
    const early = takeEarlySocket({ url });
    if (early) {
      const { socket } = early;
      socket.onmessage = null; // spice-html5 listens itself (the server says nothing before the link)
      track(socket);
      if (socket.readyState === BrowserWebSocket.OPEN) setTimeout(() => socket.dispatchEvent(new Event("open")));
      return socket;
    }
    super(url, protocols);
    track(this);
  }

  send(data) {
    if (!this.linked) {
      // The first message links a channel: see which, to report the sound's state.
      this.linked = true;
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer || []);
      if (bytes.length > 20 && bytes[20] === SPICE_CHANNEL_PLAYBACK) playbackChannel(this);
    }
    super.send(data);
  }
};

// Sound: spice-html5 plays the VM's audio (the playback channel) through an <audio> element it
// adds to the screen when the VM starts playing. Browsers may block it until the user acts.
const soundButton = document.getElementById("sound");
const audioState = document.getElementById("audio-state");
let soundOn = true;

function setAudioState(state, text) {
  audioState.dataset.state = state;
  audioState.textContent = text;
}

function playbackChannel(socket) {
  // Called as the channel sends its first message, so it is open already.
  setAudioState(soundOn ? "ready" : "muted", soundOn ? gettext("Sound: on (nothing playing)") : gettext("Sound: muted"));
  socket.addEventListener("close", () => setAudioState("none", gettext("Sound: no playback channel")));
}

function startAudio(audio) {
  audio.muted = !soundOn;
  if (!soundOn) return;
  audio.play().then(
    () => setAudioState("playing", gettext("Sound: playing")),
    (error) => {
      if (error.name === "NotAllowedError") setAudioState("blocked", gettext("Sound blocked by the browser: press Sound to start it"));
    },
  );
}

soundButton.addEventListener("click", () => {
  soundOn = !soundOn;
  soundButton.setAttribute("aria-pressed", String(soundOn));
  for (const audio of document.querySelectorAll("#spice-screen audio")) startAudio(audio);
  if (!soundOn) setAudioState("muted", gettext("Sound: muted"));
  else if (audioState.dataset.state === "muted") setAudioState("ready", gettext("Sound: on"));
});

function allClosed(timeout = 2000) {
  const pending = [...openSockets].map((socket) => new Promise((resolve) => {
    if (socket.readyState === WebSocket.CLOSED) resolve();
    socket.addEventListener("close", resolve);
    socket.close();
  }));
  return Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, timeout))]);
}

const screen = document.getElementById("spice-screen");
const screenArea = document.getElementById("screen-area");
let connection = null;
let scaled = false;

function applyScale() {
  // A CSS transform, not a size change: spice-html5 reads mouse positions as offsetX/offsetY,
  // which browsers report in the element's own (untransformed) coordinates.
  const canvas = screen.querySelector("canvas");
  if (!scaled || !canvas) {
    screen.style.transform = "";
    return;
  }
  const factor = Math.min(screenArea.clientWidth / canvas.width, screenArea.clientHeight / canvas.height);
  screen.style.transform = `scale(${factor})`;
}

// "Resize VM to window": the guest's agent (spice-vdagent) takes the screen area's size as its
// monitor's (spice-html5 sends it only while the agent is connected); once per 200 ms at most.
let fit = false;
let fitTimer = null;
function fitToWindow() {
  clearTimeout(fitTimer);
  fitTimer = setTimeout(() => {
    const current = connection;
    if (!fit || !current || !current.agent_connected) return;
    const width = Math.floor(screenArea.clientWidth);
    const height = Math.floor(screenArea.clientHeight);
    if (width > 0 && height > 0) current.resize_window(0, width, height, 32, 0, 0);
  }, 200);
}

new ResizeObserver(() => {
  applyScale();
  fitToWindow();
}).observe(screenArea);
new MutationObserver(applyScale).observe(screen, { childList: true, subtree: true, attributes: true });
new MutationObserver((changes) => {
  for (const change of changes) {
    for (const node of change.addedNodes) if (node instanceof HTMLAudioElement) startAudio(node);
  }
}).observe(screen, { childList: true, subtree: true });

function whenInputsReady(current) {
  if (current !== connection) return;
  if (current.inputs && current.inputs.state === "ready") {
    connected();
    return;
  }
  setStatus("connecting", gettext("Connecting the keyboard and mouse…"));
  setTimeout(() => whenInputsReady(current), 20);
}

const client = {
  connect(ticket) {
    screen.replaceChildren();
    const current = new SpiceHtml5.SpiceMainConn({
      uri: socketUrl(ticket),
      screen_id: "spice-screen",
      // No password: the portal's proxy authenticates each channel to the VM itself and
      // answers the page's link (console/proxy/spice.py).
      password: "",
      // spice-html5 drops key events until the inputs channel is ready, which comes after the
      // main channel's success (through websockify, a process per channel later): "Connected"
      // means typing works.
      // A watcher gets no inputs channel (view only): connected once the main channel is.
      onsuccess: () => (ticket.viewOnly ? connected() : whenInputsReady(current)),
      onerror: () => {}, // the socket's close code says why (below)
      onagent: () => {
        if (current !== connection || ticket.viewOnly) return;
        fitAvailability(true);
        fitToWindow();
      },
    });
    fitAvailability(false); // until this connection's agent says it is there
    connection = current;
    current.ws.addEventListener("close", (event) => {
      if (current === connection && current.state !== "closing") disconnected(event.code);
    });
  },
  async disconnect() {
    dropEarlySockets();
    const old = connection;
    connection = null;
    if (old) {
      old.state = "closing";
      old.stop();
    }
    await allClosed();
  },
  sendCtrlAltDel() {
    if (connection) SpiceHtml5.sendCtrlAltDel(connection);
  },
  setScale(on) {
    scaled = on;
    applyScale();
  },
  setFit(on) {
    fit = on;
    fitToWindow();
  },
  focus() {
    const canvas = screen.querySelector("canvas");
    if (canvas) canvas.focus();
  },
};

consolePage(client);
