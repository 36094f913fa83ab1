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

function sameKind(a, b) {
  if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
  if (a.nodeType !== Node.ELEMENT_NODE) return true;
  return a.getAttribute('data-key') === b.getAttribute('data-key');
}

/** Makes `current` look like `next` (an element of the same kind). */
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
  wanted.forEach((node, i) => {
    const have = current.childNodes[i];
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
