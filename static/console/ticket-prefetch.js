// Asks for the console ticket as soon as the page's head is read, while the browser fetches
// the client (see README, Performance). A classic script, not inline: the pages'
// Content-Security-Policy allows no inline script.
//
// With data-early-socket, it also opens the console's WebSocket as soon as the ticket is here,
// while the client is still loading, and keeps what arrives until the client takes the socket
// (takeEarlySocket in console-page.js): the proxy's admission and the console's greeting then
// overlap the client's loading instead of following it.
(() => {
  const script = document.currentScript;
  const earlySocket = script.dataset.earlySocket === "1";

  /** The WebSocket URL for a ticket: the portal's own proxy, or a configured websockify. */
  window.consoleSocketUrl = (ticket) => {
    const token = encodeURIComponent(ticket.token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    if (ticket.proxyUrl) {
      const base = ticket.proxyUrl.startsWith("//") ? scheme + ticket.proxyUrl : ticket.proxyUrl;
      return `${base}${base.includes("?") ? "&" : "?"}token=${token}`;
    }
    return `${scheme}//${location.host}${ticket.wsPath}?token=${token}`;
  };

  function openEarly(ticket) {
    const socket = new WebSocket(window.consoleSocketUrl(ticket), ["binary"]);
    socket.binaryType = "arraybuffer";
    const early = { token: ticket.token, socket, received: [] };
    socket.onmessage = (event) => early.received.push(event);
    return early;
  }

  window.consoleTicket = fetch(script.dataset.ticketUrl, {
    method: "POST",
    headers: { "X-CSRFToken": script.dataset.csrfToken },
    credentials: "same-origin",
  }).then((response) => response.json().catch(() => ({})).then((body) => {
    if (!response.ok) throw new Error(body.error || `the portal answered ${response.status}`);
    if (earlySocket) window.consoleEarlySocket = openEarly(body);
    return body;
  }));
})();
