// The VM list: refresh the screen thumbnails of running VMs every few seconds, only those in
// view (a long list asks for what the user sees; the browser loads the rest lazily as they
// scroll into view).
const visible = new Set();
const watcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) visible.add(entry.target);
    else visible.delete(entry.target);
  }
});
for (const img of document.querySelectorAll("img.thumbnail")) watcher.observe(img);
setInterval(() => {
  for (const img of visible) {
    const url = new URL(img.src);
    url.searchParams.set("t", Date.now());
    img.src = url.toString();
  }
}, 5000);
