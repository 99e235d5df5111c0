// Safe DOM building: the only way the console puts anything on the page.
//
// Every string becomes a text node or an attribute value, never markup: a VM called
// `<img src=x onerror=...>` is shown as those characters. Nothing here (or anywhere in the
// console) assigns innerHTML, outerHTML or calls insertAdjacentHTML/document.write; a test
// greps the files for them.

/**
 * Create an element.
 * @param {string} tag - the element's name ("svg:..." for SVG elements).
 * @param {object} props - "class", "text", "dataset" (an object), "on" (event -> handler),
 *   any other key is an attribute (skipped when null, undefined or false; true sets it empty).
 * @param {...(Node|string|number|null|Array)} children - strings become text nodes.
 * @returns {Element}
 */
export function h(tag, props = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.setAttribute("class", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** Append children (nodes, strings as text, arrays flattened, null skipped). */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace a node's children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** Set a node's text only when it changed (keeps selections and screen readers calm). */
export function setText(node, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Keep a container's children in step with a list, by key: existing elements are updated in
 * place (so focus and selection inside them survive live updates), new ones created, gone
 * ones removed, and the order follows the list.
 * @param {Element} parent
 * @param {Array} items
 * @param {(item) => string} keyOf
 * @param {(item) => Element} create - builds the element for a new key.
 * @param {(element, item) => void} update - refreshes an element from its item.
 */
export function syncChildren(parent, items, keyOf, create, update) {
  const existing = new Map();
  for (const child of parent.children) existing.set(child.dataset.key, child);
  let cursor = parent.firstElementChild;
  for (const item of items) {
    const key = String(keyOf(item));
    let element = existing.get(key);
    if (element) existing.delete(key);
    else {
      element = create(item);
      element.dataset.key = key;
    }
    update(element, item);
    if (element !== cursor) parent.insertBefore(element, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const stale of existing.values()) stale.remove();
}

/** Show exactly one of several elements (the others get `hidden`). */
export function showOnly(shown, ...all) {
  for (const element of all) element.hidden = element !== shown;
}
