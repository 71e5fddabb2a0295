// What both recording players share: loading a recording, the playback controls (play, pause,
// speed 1-16x, seek, the clock), and a clock that drives a player's `advanceTo(ms)`.

import { gettext, interpolate } from "./i18n.js";

export function setStatus(kind, text) {
  const status = document.getElementById("status");
  status.className = `status ${kind}`;
  status.textContent = text;
}

export async function fetchRecording(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(interpolate(gettext("the portal answered %(status)s"), { status: response.status }));
  return new Uint8Array(await response.arrayBuffer());
}

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Wire the controls to a player: {duration, reset(), advanceTo(ms)}; advanceTo only moves forward
 * (a seek back resets the player and replays from the start: encodings keep state). */
export function playbackControls(player) {
  const playButton = document.getElementById("play");
  const speedSelect = document.getElementById("speed");
  const seekInput = document.getElementById("seek");
  const clockText = document.getElementById("clock");
  let position = 0;
  let playing = false;
  let last = 0;

  function show() {
    clockText.textContent = `${clock(position)} / ${clock(player.duration)}`;
    seekInput.value = String(player.duration ? Math.round((position / player.duration) * 1000) : 0);
  }

  function frame(now) {
    if (!playing) return;
    position = Math.min(player.duration, position + (now - last) * Number(speedSelect.value));
    last = now;
    player.advanceTo(position);
    show();
    if (position >= player.duration) {
      pause();
      setStatus("disconnected", gettext("End of the recording"));
      return;
    }
    requestAnimationFrame(frame);
  }

  function play() {
    if (position >= player.duration) seek(0);
    playing = true;
    playButton.textContent = gettext("Pause");
    playButton.setAttribute("aria-pressed", "true");
    setStatus("connected", gettext("Playing"));
    last = performance.now();
    requestAnimationFrame(frame);
  }

  function pause() {
    playing = false;
    playButton.textContent = gettext("Play");
    playButton.setAttribute("aria-pressed", "false");
    if (position < player.duration) setStatus("connecting", gettext("Paused"));
  }

  function seek(ms) {
    if (ms < position) player.reset();
    position = ms;
    player.advanceTo(position);
    show();
  }

  playButton.addEventListener("click", () => (playing ? pause() : play()));
  seekInput.addEventListener("input", () => seek((Number(seekInput.value) / 1000) * player.duration));
  show();
  return { play, pause, seek, get position() { return position; } };
}
