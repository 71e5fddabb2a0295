// The staff page of open console sessions: polls the API every second, and ends a session
// through it. Built with DOM calls (no innerHTML): user names and addresses are data.
const script = document.getElementById("live-script");
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const body = document.querySelector("#live-consoles tbody");
const status = document.getElementById("live-status");

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
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
    status.textContent = `Could not end it: ${error.error?.message || response.status}`;
    button.disabled = false;
  } else {
    button.textContent = "Ending…";
  }
}

function row(session) {
  const tr = document.createElement("tr");
  tr.dataset.session = session.id;
  const cells = [
    session.user, session.vm, session.host, session.protocol.toUpperCase(), session.via,
    session.client_address || "", new Date(session.started_at).toLocaleTimeString(),
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
    button.textContent = "Ending…";
    button.disabled = true;
  } else {
    button.textContent = "End";
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
    if (!response.ok) throw new Error(page.error?.message || `the portal answered ${response.status}`);
    // .vv downloads are recorded as sessions that end as they start: none is open here.
    body.replaceChildren(...page.items.map(row));
    status.textContent = `${page.count} open · updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    status.textContent = `Not updated: ${error.message}`;
  }
  setTimeout(refresh, 1000);
}
refresh();
