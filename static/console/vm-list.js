// The VM list: refresh the screen thumbnails of running VMs every few seconds.
setInterval(() => {
  for (const img of document.querySelectorAll("img.thumbnail")) {
    const url = new URL(img.src);
    url.searchParams.set("t", Date.now());
    img.src = url.toString();
  }
}, 5000);
