// The VM page while the VM moves to another host: the move's progress, then its outcome.
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
    if (detail && move.data_total) detail.textContent = `${Math.round(move.data_remaining / 1048576)} MiB of ${Math.round(move.data_total / 1048576)} MiB left`;
    setTimeout(poll, 1000);
    return;
  }
  window.location.reload(); // moved or failed: the page shows where the VM is now
}

if (state && state.dataset.state === "running") setTimeout(poll, 1000);
