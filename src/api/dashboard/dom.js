// Building and patching the page. Every value from the admin API enters
// the page as text (a text node or an attribute value), never as markup:
// h() has no way to take HTML. Pages are rendered afresh from data on each
// update and patched into the page by morph(), which keeps the elements
// that stay (and so focus, scroll position and open <details>).

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === 'function') {
      throw new Error('h(): listen with data-action and one delegated listener, not ' + name);
    }
    element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h('td', { class: 'num' }, '12', child, [more]). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, as h() makes HTML ones. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

const keyOf = (node) => (node.nodeType === Node.ELEMENT_NODE ? node.getAttribute('data-key') : null);

function sameKind(a, b) {
  return a.nodeType === b.nodeType && a.nodeName === b.nodeName && keyOf(a) === keyOf(b);
}

/**
 * Makes `current` look like `next` (an element of the same kind). Children
 * with a data-key keep their element while the key stays: a row that
 * leaves is removed, a new one is inserted, the others are patched where
 * they are (a focused button in them keeps its focus).
 */
export function morph(current, next) {
  const keepOpen = current.nodeName === 'DETAILS' && current.open;
  for (const { name } of [...current.attributes]) {
    if (!next.hasAttribute(name)) current.removeAttribute(name);
  }
  for (const { name, value } of [...next.attributes]) {
    if (current.getAttribute(name) !== value) current.setAttribute(name, value);
  }
  if (keepOpen) current.open = true;
  const wanted = [...next.childNodes];
  const wantedKeys = new Set(wanted.map(keyOf).filter((key) => key !== null));
  for (const child of [...current.childNodes]) {
    const key = keyOf(child);
    if (key !== null && !wantedKeys.has(key)) child.remove();
  }
  wanted.forEach((node, i) => {
    let have = current.childNodes[i];
    const key = keyOf(node);
    if (have && key !== null && !sameKind(have, node)) {
      const later = [...current.childNodes].slice(i + 1).find((child) => sameKind(child, node));
      if (!later) {
        current.insertBefore(node, have);
        return;
      }
      current.insertBefore(later, have);
      have = later;
    }
    if (!have) {
      current.append(node);
    } else if (!sameKind(have, node)) {
      current.replaceChild(node, have);
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      morph(have, node);
    } else if (have.nodeValue !== node.nodeValue) {
      have.nodeValue = node.nodeValue;
    }
  });
  while (current.childNodes.length > wanted.length) current.lastChild.remove();
}

/** A path segment of the admin API. */
export function seg(value) {
  return encodeURIComponent(String(value));
}
