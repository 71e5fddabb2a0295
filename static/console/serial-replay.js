// Plays a serial console's recording (asciicast v2) back in xterm.js, with search.
import "./style-nonce.js"; // before xterm.js is imported (below)
import { gettext, interpolate } from "./i18n.js";
import { fetchRecording, playbackControls, setStatus } from "./replay.js";

const { Terminal } = await import("../xterm/xterm.js");

const script = document.getElementById("replay-script");
const terminal = new Terminal({ scrollback: 10000, fontSize: 14, disableStdin: true, convertEol: false });
terminal.open(document.getElementById("terminal"));
// The text as a screen reader or a search sees it: escape sequences removed.
const ESCAPES = new RegExp(`${"\u001b"}(\\[[0-9;?]*[A-Za-z]|[78=>]|\\][^${"\u0007"}]*${"\u0007"})`, "g");
const plain = (text) => text.replace(ESCAPES, "");

try {
  const lines = new TextDecoder().decode(await fetchRecording(script.dataset.url)).split("\n").filter(Boolean);
  const header = JSON.parse(lines[0]);
  const output = [];
  for (const line of lines.slice(1)) {
    try {
      const [t, kind, text] = JSON.parse(line);
      if (kind === "o") output.push({ t: Math.round(t * 1000), text });
    } catch (_) {
      break; // the last line of a worker that was killed mid-write
    }
  }
  terminal.resize(header.width || 80, header.height || 24);
  let next = 0;
  const player = {
    duration: output.length ? output[output.length - 1].t : 0,
    reset() {
      terminal.reset();
      next = 0;
    },
    advanceTo(ms) {
      let chunk = "";
      while (next < output.length && output[next].t <= ms) chunk += output[next++].text;
      if (chunk) terminal.write(chunk);
    },
  };
  window.replay = playbackControls(player);
  window.replayText = () => output.map((event) => plain(event.text)).join("");
  const search = document.getElementById("search");
  search.addEventListener("change", () => {
    const needle = search.value;
    if (!needle) return;
    let seen = "";
    const hit = output.find((event) => (seen += plain(event.text)).includes(needle));
    document.getElementById("found").textContent = hit ? `found at ${Math.round(hit.t / 1000)} s` : "not found";
    if (hit) window.replay.seek(hit.t);
  });
  setStatus("connecting", interpolate(gettext("Ready: %(count)s outputs over %(seconds)s s"), { count: output.length, seconds: Math.round(player.duration / 1000) }));
} catch (error) {
  setStatus("disconnected", interpolate(gettext("Cannot play the recording: %(error)s"), { error: error.message }));
}
