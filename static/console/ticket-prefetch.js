// Asks for the console ticket as soon as the page's head is read, while the browser fetches
// the client's modules (see README, Performance). A classic script, not inline: the pages'
// Content-Security-Policy allows no inline script.
(() => {
  const script = document.currentScript;
  window.consoleTicket = fetch(script.dataset.ticketUrl, {
    method: "POST",
    headers: { "X-CSRFToken": script.dataset.csrfToken },
    credentials: "same-origin",
  }).then((response) => response.json().catch(() => ({})).then((body) => {
    if (!response.ok) throw new Error(body.error || `the portal answered ${response.status}`);
    return body;
  }));
})();
