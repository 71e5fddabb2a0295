// The VM page while the VM moves to another host: the move's progress, then its outcome.
// Django's JavaScript catalogue (base.html loads it first): the page's words in its language.
const gettext = window.gettext ?? ((text) => text);
const fill = (format, values) => format.replace(/%\((\w+)\)s/g, (_, name) => String(values[name]));
const box = document.getElementById("migration");
const state = document.getElementById("migration-state");

async function poll() {
  let move;
  try {
    const response = await fetch(box.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    move = await response.json();
  } catch (_) {
    setTimeout(poll, 2000);
    return;
  }
  if (move.state === "running") {
    const progress = document.getElementById("migration-progress");
    if (progress) progress.value = move.percent;
    const detail = document.getElementById("migration-detail");
    if (detail && move.data_total) detail.textContent = fill(gettext("%(left)s MiB of %(all)s MiB left"), { left: Math.round(move.data_remaining / 1048576), all: Math.round(move.data_total / 1048576) });
    setTimeout(poll, 1000);
    return;
  }
  window.location.reload(); // moved or failed: the page shows where the VM is now
}

if (state && state.dataset.state === "running") setTimeout(poll, 1000);
