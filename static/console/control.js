// Control of a VNC console between two people (console/control.py): the portal's proxy decides
// whose keys and mouse reach the VM; this part of the page shows who has them, asks for them
// and answers those who ask. Pages of users who may operate the VM only (viewers just watch).

import { consoleConnected } from "./console-page.js";
import { gettext, interpolate } from "./i18n.js";

const POLL_MS = 2000;

function button(text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

/** Follow the console's control; `onInput(hasInput)` hears each change of this page's input. */
export function controlWatch(onInput) {
  const box = document.getElementById("control");
  if (!box) return;
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const requestButton = document.getElementById("control-request");
  const endButton = document.getElementById("control-end");
  const note = document.getElementById("control-note");
  const requests = document.getElementById("control-requests");
  let hasInput = null;
  let shownRequests = null;
  let refusal = "";

  async function refresh() {
    let state;
    try {
      const response = await fetch(box.dataset.stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      state = await response.json();
    } catch (_) {
      return; // the portal is away for a moment: the console's own status says so
    }
    if (state.input !== hasInput) {
      hasInput = state.input;
      onInput(hasInput);
    }
    requestButton.hidden = !state.mayRequest;
    endButton.hidden = !(state.handedTo || state.givenBy || state.asked);
    if (state.handedTo) endButton.textContent = gettext("Take back control");
    else if (state.givenBy) endButton.textContent = gettext("Give control back");
    else endButton.textContent = gettext("Withdraw request");
    let words = "";
    if (state.handedTo) words = interpolate(gettext("You gave control to %(user)s: your keys and mouse do not reach the VM."), { user: state.handedTo });
    else if (state.givenBy) words = interpolate(gettext("%(user)s gave you control."), { user: state.givenBy });
    else if (state.asked) words = gettext("Control asked for: waiting for an answer…");
    note.textContent = words || refusal;
    const key = state.requests.map((asking) => asking.id).join(",");
    if (key !== shownRequests) {
      shownRequests = key;
      requests.replaceChildren(...state.requests.map((asking) => {
        const line = document.createElement("span");
        line.append(interpolate(gettext("%(user)s asks for control"), { user: asking.user }));
        line.append(
          button(gettext("Give control"), () => act(box.dataset.answerUrl, { request: asking.id, accept: "1" })),
          button(gettext("Refuse"), () => act(box.dataset.answerUrl, { request: asking.id, accept: "0" })),
        );
        return line;
      }));
    }
  }

  async function act(url, fields = {}) {
    // Form-encoded: an empty multipart body is refused (400) before it reaches the portal.
    const body = new URLSearchParams(fields);
    refusal = "";
    try {
      const response = await fetch(url, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
      });
      const answer = await response.json();
      if (answer.error) refusal = answer.error;
    } catch (_) {
      refusal = gettext("The portal did not answer; try again.");
    }
    await refresh();
  }

  requestButton.addEventListener("click", () => act(box.dataset.requestUrl));
  endButton.addEventListener("click", () => act(box.dataset.endUrl));
  const poll = async () => {
    if (consoleConnected()) await refresh(); // a closed console has no control to follow
    setTimeout(poll, POLL_MS);
  };
  poll();
}
