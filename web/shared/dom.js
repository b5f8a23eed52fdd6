// Building the page's elements: text from people and from the network is always inserted as
// text (a Text node, textContent), never parsed as HTML.

/**
 * `el("p", {class: "note", "aria-live": "polite"}, "text", child)`: an element with these
 * attributes (`on` holds event listeners) and children (strings become text).
 */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "on") {
      for (const [type, listener] of Object.entries(value)) element.addEventListener(type, listener);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  element.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

/** An https address as a link that opens apart (never a `javascript:` or `data:` one). */
export function safeLink(address, label) {
  let url;
  try {
    url = new URL(address);
  } catch {
    return null;
  }
  if (url.protocol !== "https:") return null;
  return el("a", { href: address, target: "_blank", rel: "noopener noreferrer nofollow" }, label ?? address);
}
