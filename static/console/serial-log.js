// The serial log page's filter: only the lines that hold what the user types (no innerHTML: the
// log is the guest's text).
const pre = document.getElementById("serial-log");
const filter = document.getElementById("log-filter");
const count = document.getElementById("log-count");
const lines = pre?.tagName === "PRE" ? pre.textContent.split("\n") : [];

filter?.addEventListener("input", () => {
  const needle = filter.value;
  const shown = needle ? lines.filter((line) => line.includes(needle)) : lines;
  pre.textContent = shown.join("\n");
  count.textContent = needle ? `${shown.length} of ${lines.length} lines` : "";
});
