// Asks for the console ticket as soon as the page's head is read, while the browser fetches
// the client (see README, Performance). A classic script, not inline: the pages'
// Content-Security-Policy allows no inline script.
//
// With data-early-sockets="N", it also opens N of the console's WebSockets as soon as the
// ticket is here, while the client is still loading, and keeps what arrives until the client
// takes them (takeEarlySocket in console-page.js): the proxy's admission (and for VNC the
// console's greeting) then overlap the client's loading instead of following it. VNC needs
// one; a SPICE page opens its main channel, then its display channel, one after the other:
// both sockets wait ready.
(() => {
  const script = document.currentScript;
  const earlySockets = Number(script.dataset.earlySockets || 0);

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
    const url = window.consoleSocketUrl(ticket);
    const socket = new WebSocket(url, ["binary"]);
    socket.binaryType = "arraybuffer";
    const early = { token: ticket.token, url, socket, received: [] };
    socket.onmessage = (event) => early.received.push(event);
    return early;
  }

  window.consoleTicket = fetch(script.dataset.ticketUrl, {
    method: "POST",
    headers: { "X-CSRFToken": script.dataset.csrfToken, Accept: "application/json" },
    credentials: "same-origin",
  }).then((response) => response.json().catch(() => ({})).then((body) => {
    if (!response.ok) throw new Error(body.error || `the portal answered ${response.status}`);
    window.consoleEarlySockets = Array.from({ length: earlySockets }, () => openEarly(body));
    return body;
  }));
})();
