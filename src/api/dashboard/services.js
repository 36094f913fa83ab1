// The services page: every service with its releases, roles, canary
// share, instance health, host names and prefix, and each release's rate,
// errors and p99 over the last minute.

import { get, Refused } from './api.js';
import { h, seg } from './dom.js';
import { releaseTable, routesLine, stateBadges } from './releases.js';

async function statusOf(name) {
  try {
    return await get(`/v1/services/${seg(name)}/status`);
  } catch (error) {
    if (error instanceof Refused) return [];
    throw error;
  }
}

function card(service, statuses) {
  return h('section', { class: 'card service-card', 'data-key': `svc-${service.name}`, 'aria-labelledby': `svc-${service.name}` },
    h('header', { class: 'card-head' },
      h('h2', { id: `svc-${service.name}` }, h('a', { href: `#/services/${seg(service.name)}` }, service.name)),
      h('span', { class: 'muted' }, `revision ${service.revision}`),
      stateBadges(service),
      routesLine(service)),
    releaseTable(service, statuses));
}

export function servicesPage() {
  return {
    id: 'services',
    title: 'Services',
    crumbs: [],
    async load() {
      const services = await get('/v1/services');
      const statuses = await Promise.all(services.map((s) => statusOf(s.name)));
      return { services, statuses };
    },
    render({ services, statuses }) {
      const releases = services.reduce((n, s) => n + s.releases.length, 0);
      return h('div', { class: 'page' },
        h('div', { class: 'page-head' },
          h('h1', { tabindex: '-1' }, 'Services'),
          h('p', { class: 'muted' }, `${services.length} ${services.length === 1 ? 'service' : 'services'}, ${releases} ${releases === 1 ? 'release' : 'releases'}; rates, errors and p99 over the last minute`)),
        services.length === 0
          ? h('p', { class: 'empty' }, 'No service yet. Deploy one: switchyard deploy NAME VERSION -- COMMAND')
          : services.map((service, i) => card(service, statuses[i])));
    },
  };
}
