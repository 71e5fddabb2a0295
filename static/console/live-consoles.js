// The staff page of open console sessions: polls the API every second, and ends a session
// through it. Built with DOM calls (no innerHTML): user names and addresses are data.
// Django's JavaScript catalogue (base.html loads it first): the page's words in its language.
const gettext = window.gettext ?? ((text) => text);
const fill = (format, values) => format.replace(/%\((\w+)\)s/g, (_, name) => String(values[name]));
const script = document.getElementById("live-script");
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const body = document.querySelector("#live-consoles tbody");
const status = document.getElementById("live-status");

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  const number = n.toLocaleString(document.documentElement.lang, { maximumFractionDigits: i ? 1 : 0, minimumFractionDigits: i ? 1 : 0 });
  return `${number} ${units[i]}`;
}

function duration(since) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

async function end(session, button) {
  button.disabled = true;
  const response = await fetch(`${script.dataset.sessionsUrl}${session.id}/end/`, {
    method: "POST",
    headers: { "X-CSRFToken": csrfToken },
    credentials: "same-origin",
  });
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    status.textContent = fill(gettext("Could not end it: %(error)s"), { error: error.error?.message || response.status });
    button.disabled = false;
  } else {
    button.textContent = gettext("Ending…");
  }
}

function row(session) {
  const tr = document.createElement("tr");
  tr.dataset.session = session.id;
  const cells = [
    session.user, session.vm, session.host, session.protocol.toUpperCase(), session.via,
    session.client_address || "", new Date(session.started_at).toLocaleTimeString(document.documentElement.lang),
    duration(session.started_at), bytes(session.bytes_to_client), bytes(session.bytes_from_client),
  ];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text ?? "";
    tr.append(td);
  }
  const td = document.createElement("td");
  const button = document.createElement("button");
  button.className = "danger";
  if (session.ended_by) {
    button.textContent = gettext("Ending…");
    button.disabled = true;
  } else {
    button.textContent = gettext("End");
    button.addEventListener("click", () => end(session, button));
  }
  td.append(button);
  tr.append(td);
  return tr;
}

async function refresh() {
  try {
    const response = await fetch(`${script.dataset.sessionsUrl}?open=true&limit=500`, { credentials: "same-origin" });
    const page = await response.json();
    if (!response.ok) throw new Error(page.error?.message || fill(gettext("the portal answered %(status)s"), { status: response.status }));
    // .vv downloads are recorded as sessions that end as they start: none is open here.
    body.replaceChildren(...page.items.map(row));
    const words = gettext("%(count)s open · updated %(time)s");
    status.textContent = fill(words, { count: page.count.toLocaleString(document.documentElement.lang), time: new Date().toLocaleTimeString(document.documentElement.lang) });
  } catch (error) {
    status.textContent = fill(gettext("Not updated: %(error)s"), { error: error.message });
  }
  setTimeout(refresh, 1000);
}
refresh();
