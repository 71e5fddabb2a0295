// The serial log page's filter: only the lines that hold what the user types (no innerHTML: the
// log is the guest's text).
// Django's JavaScript catalogue (base.html loads it first): the page's words in its language.
const gettext = window.gettext ?? ((text) => text);
const fill = (format, values) => format.replace(/%\((\w+)\)s/g, (_, name) => String(values[name]));
const pre = document.getElementById("serial-log");
const filter = document.getElementById("log-filter");
const count = document.getElementById("log-count");
const lines = pre?.tagName === "PRE" ? pre.textContent.split("\n") : [];

filter?.addEventListener("input", () => {
  const needle = filter.value;
  const shown = needle ? lines.filter((line) => line.includes(needle)) : lines;
  pre.textContent = shown.join("\n");
  count.textContent = needle ? fill(gettext("%(shown)s of %(all)s lines"), { shown: shown.length, all: lines.length }) : "";
});
