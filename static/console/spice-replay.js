// Plays a SPICE console's recording back in spice-html5: the portal's replay endpoint
// (console/proxy/replay.py) answers each channel's link as the console did and sends what its
// client received, with its timing, then a text frame saying the channel's recording ended.
// This page chooses the speed, shows the clock, and says when the display channel ended.
import * as SpiceHtml5 from "../spice-html5/main.js";
import { gettext, interpolate } from "./i18n.js";
import { setStatus } from "./replay.js";

const SPICE_CHANNEL_DISPLAY = 2; // SpiceLinkMess.channel_type, at byte 20 of a channel's first message

const script = document.getElementById("replay-script");
const playButton = document.getElementById("play");
const speedSelect = document.getElementById("speed");
const clockText = document.getElementById("clock");
const duration = Number(script.dataset.duration);
let connection = null;
let timer = null;
let generation = 0;
let ended = false;

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function showClock(ms) {
  clockText.textContent = `${clock(Math.min(ms, duration))} / ${clock(duration)}`;
}

function theEnd(current) {
  if (current !== generation || ended) return;
  ended = true;
  clearInterval(timer);
  showClock(duration);
  setStatus("disconnected", gettext("End of the recording"));
}

// The replay's text frames are for this page, never for spice-html5 (which reads binary only).
const BrowserWebSocket = window.WebSocket;
window.WebSocket = class ReplayWebSocket extends BrowserWebSocket {
  addEventListener(type, listener, options) {
    if (type !== "message") return super.addEventListener(type, listener, options);
    const current = generation;
    return super.addEventListener(type, (event) => {
      if (typeof event.data !== "string") return listener.call(this, event);
      if (this.channelType === SPICE_CHANNEL_DISPLAY) theEnd(current);
      return undefined;
    }, options);
  }

  send(data) {
    if (this.channelType === undefined) {
      const bytes = new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer || new ArrayBuffer(0));
      this.channelType = bytes.length > 20 ? bytes[20] : null;
    }
    super.send(data);
  }
};

function start() {
  generation += 1;
  ended = false;
  if (connection) {
    connection.state = "closing";
    connection.stop();
  }
  clearInterval(timer);
  const speed = Number(speedSelect.value);
  const screen = document.getElementById("spice-screen");
  screen.replaceChildren();
  const url = new URL(script.dataset.socket, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("speed", String(speed));
  const started = performance.now();
  setStatus("connecting", gettext("Linking the recorded channels…"));
  connection = new SpiceHtml5.SpiceMainConn({
    uri: url.href,
    screen_id: "spice-screen",
    password: "", // the replay asks for none
    onsuccess: () => ended || setStatus("connected", speed ? interpolate(gettext("Playing at %(speed)sx"), { speed }) : gettext("Playing to the end")),
    onerror: (error) => ended || setStatus("disconnected", interpolate(gettext("Cannot play the recording: %(error)s"), { error: error.message || error })),
  });
  if (speed) timer = setInterval(() => showClock((performance.now() - started) * speed), 250);
}

playButton.addEventListener("click", start);
speedSelect.addEventListener("change", start);
start();
window.replay = { start };
