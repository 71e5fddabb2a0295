// xterm.js sizes its rows with <style> elements it creates. The page's Content-Security-Policy
// admits <style> only with this response's nonce: give it to each one xterm.js makes. Imported
// before xterm.js is (dynamically), so every element it creates carries it.
const styleNonce = document.querySelector('meta[name="style-nonce"]').content;
const createElement = Document.prototype.createElement;
Document.prototype.createElement = function (name, options) {
  const element = createElement.call(this, name, options);
  if (String(name).toLowerCase() === "style") element.setAttribute("nonce", styleNonce);
  return element;
};
