// The pages' words in the user's language: Django's JavaScript catalogue (/jsi18n/, loaded by
// every page before its modules) translates; without it the words stay English. Messages with
// values use named placeholders, "%(name)s", as the portal's Python does.

export function gettext(text) {
  return typeof window.gettext === "function" ? window.gettext(text) : text;
}

export function ngettext(singular, plural, count) {
  if (typeof window.ngettext === "function") return window.ngettext(singular, plural, count);
  return count === 1 ? singular : plural;
}

/** `format` with each "%(name)s" replaced by `values[name]`. */
export function interpolate(format, values) {
  return format.replace(/%\((\w+)\)s/g, (_, name) => String(values[name]));
}

/** Numbers as the page's language writes them (1,234.5 or 1.234,5 or 1 234,5). */
export function formatNumber(value, options) {
  return new Intl.NumberFormat(document.documentElement.lang || undefined, options).format(value);
}
