// Who gets what: the default split between main and the canary, every
// line of the routing table in the order it is tried (opt-in, rules,
// canary, main), and the shadows that get copies.

import { h, s } from './dom.js';
import { percent } from './format.js';
import { colorOf, swatch } from './releases.js';

function shares(service) {
  const canary = service.policy.canary;
  const list = [];
  const rest = 100 - (canary?.percent ?? 0);
  if (service.main && rest > 0) list.push({ version: service.main, role: 'main', percent: rest });
  if (canary && canary.percent > 0) list.push({ version: canary.version, role: 'canary', percent: canary.percent });
  return list;
}

function shareBar(service) {
  const parts = shares(service);
  let x = 0;
  const rects = parts.map((part) => {
    const rect = s('rect', { 'data-key': part.version, class: `fill ${colorOf(service, part.version)}`, x, y: 0, width: part.percent, height: 10 });
    x += part.percent;
    return rect;
  });
  const label = parts.map((p) => `${p.version} ${p.role} ${p.percent} %`).join(', ') || 'no release gets traffic';
  return h('div', { class: 'share' },
    s('svg', { class: 'share-bar', viewBox: '0 0 100 10', preserveAspectRatio: 'none', role: 'img', 'aria-label': `Split of the other clients: ${label}` },
      s('rect', { class: 'track', x: 0, y: 0, width: 100, height: 10 }), rects),
    h('ul', { class: 'share-legend' }, parts.map((part) =>
      h('li', { 'data-key': part.version },
        swatch(colorOf(service, part.version)),
        h('strong', {}, `${part.percent} %`), ` ${part.version} `,
        h('span', { class: 'muted' }, part.role)))));
}

function routeTable(routes) {
  return h('table', { class: 'routes' },
    h('caption', { class: 'visually-hidden' }, 'Routing table, in the order it is tried'),
    h('colgroup', {}, h('col', { class: 'col-n' }), h('col', { class: 'col-when' }), h('col', { class: 'col-to' })),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', class: 'num' }, '#'),
      h('th', { scope: 'col' }, 'When'),
      h('th', { scope: 'col' }, 'Goes to'))),
    h('tbody', {}, routes.map((line, i) =>
      h('tr', { 'data-key': `${i}` },
        h('td', { class: 'num muted' }, `${i + 1}`),
        h('td', {}, line.matches),
        h('td', {}, line.target)))));
}

function shadowLine(service, release) {
  const settings = release.shadow;
  const mirrored = settings.enabled && settings.sample_percent > 0;
  return h('li', { 'data-key': release.version },
    swatch(colorOf(service, release.version)), h('strong', {}, release.version), ' ',
    mirrored
      ? `gets a copy of ${percent(settings.sample_percent / 100)} of requests (${settings.methods.length ? settings.methods.join(', ') : 'every method'}); its answers are compared with main's and thrown away`
      : 'mirroring is off: it gets no copies');
}

/** The traffic section of a service. */
export function trafficPicture(service, routes) {
  const shadows = service.releases.filter((r) => r.role === 'shadow');
  return h('section', { class: 'panel', 'aria-labelledby': 'traffic-title', 'data-key': 'traffic' },
    h('h2', { id: 'traffic-title' }, 'Traffic'),
    h('p', { class: 'muted' }, 'Clients that no opt-in or rule sends elsewhere:'),
    shareBar(service),
    h('h3', {}, 'In the order it is tried'),
    routeTable(routes),
    h('h3', {}, 'Shadows'),
    shadows.length
      ? h('ul', { class: 'plain' }, shadows.map((release) => shadowLine(service, release)))
      : h('p', { class: 'muted' }, 'No shadow: no release gets mirrored copies.'));
}
