// Plays a VNC console's recording back with noVNC's own decoder: the recording is the whole
// stream the client received (console/recordings.py), fed to noVNC through a channel that stands
// for its WebSocket; what noVNC sends goes nowhere.
import RFB from "../novnc/core/rfb.js";
import { gettext, interpolate } from "./i18n.js";
import { fetchRecording, playbackControls, setStatus } from "./replay.js";

const MAGIC = "VCPREC1\n";
const TO_CLIENT = 0;

function parse(bytes) {
  const magic = new TextDecoder().decode(bytes.subarray(0, MAGIC.length));
  if (magic !== MAGIC) throw new Error("not a console recording");
  const headerEnd = bytes.indexOf(10, MAGIC.length);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(MAGIC.length, headerEnd)));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records = [];
  let pos = headerEnd + 1;
  while (pos + 9 <= bytes.length) {
    const t = view.getUint32(pos);
    const kind = view.getUint8(pos + 4);
    const length = view.getUint32(pos + 5);
    if (pos + 9 + length > bytes.length) break; // cut short by a worker that was killed
    if (kind === TO_CLIENT) records.push({ t, data: bytes.slice(pos + 9, pos + 9 + length) });
    pos += 9 + length;
  }
  return { header, records };
}

/** What noVNC's Websock takes for a WebSocket: here, fed by the player. */
class ReplayChannel {
  constructor() {
    this.binaryType = "arraybuffer";
    this.protocol = "";
    this.readyState = "open";
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
  }

  send() {} // the viewer's own messages (its handshake, update requests) go nowhere

  close() {
    this.readyState = "closed";
  }

  deliver(data) {
    this.onmessage?.({ data: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) });
  }
}

const script = document.getElementById("replay-script");
const screen = document.getElementById("vnc-screen");

try {
  const { records } = parse(await fetchRecording(script.dataset.url));
  let rfb = null;
  let channel = null;
  let next = 0;
  const player = {
    duration: records.length ? records[records.length - 1].t : 0,
    reset() {
      rfb?.disconnect();
      screen.replaceChildren();
      channel = new ReplayChannel();
      rfb = new RFB(screen, channel);
      rfb.viewOnly = true;
      rfb.scaleViewport = true;
      next = 0;
    },
    advanceTo(ms) {
      if (!channel.onmessage) return; // noVNC attaches the channel a moment after it is made
      while (next < records.length && records[next].t <= ms) channel.deliver(records[next++].data);
    },
  };
  player.reset();
  await new Promise((resolve) => setTimeout(resolve));
  window.replay = playbackControls(player);
  window.replay.seek(0);
  setStatus("connecting", interpolate(gettext("Ready: %(count)s updates over %(seconds)s s"), { count: records.length, seconds: Math.round(player.duration / 1000) }));
} catch (error) {
  setStatus("disconnected", interpolate(gettext("Cannot play the recording: %(error)s"), { error: error.message }));
}
