// A service's releases as a table, on both pages: role, health of each
// instance, and the last minute's rate, errors and p99. The columns have
// fixed widths, so numbers changing never move the table.

import { h } from './dom.js';
import { ago, count, millis, percent, rate } from './format.js';

/** The colour of a release on this page: the same in its row and its chart lines. */
export function colorOf(service, version) {
  const index = service.releases.findIndex((r) => r.version === version);
  return `c${Math.max(0, index) % 6}`;
}

export function swatch(color) {
  return h('span', { class: `swatch ${color}`, 'aria-hidden': 'true' });
}

/** `canary 10 %`, `green (opt-in)`, `shadow`… */
export function roleText(release, policy) {
  if (release.role === 'canary' && policy.canary?.version === release.version) {
    return `canary ${policy.canary.percent} %`;
  }
  if (release.role === 'green') return 'green (opt-in)';
  return release.role;
}

export function roleBadge(release, policy) {
  return h('span', { class: `badge role-${release.role}` }, roleText(release, policy));
}

const PHASE_CLASS = {
  ready: 'ok', starting: 'warn', degraded: 'warn', unhealthy: 'bad', 'crash-loop': 'bad', failed: 'bad', stopped: 'bad',
};

function health(release) {
  const healthy = release.instances.filter((i) => i.health === 'healthy').length;
  const dots = release.instances.map((instance) =>
    h('span', {
      'data-key': `i${instance.slot}`,
      class: `dot ${instance.health}`,
      title: `instance ${instance.slot}: ${instance.health}${instance.addr ? ` at ${instance.addr}` : ''}${instance.restarts ? `, ${instance.restarts} restarts` : ''}`,
    }));
  return h('span', { class: 'health' },
    h('span', { class: 'dots', 'aria-hidden': 'true' }, dots),
    h('span', { class: `phase ${PHASE_CLASS[release.status] ?? 'warn'}` }, release.status),
    h('span', { class: 'muted' }, ` ${healthy}/${release.instances.length}`));
}

function actionButtons(service, release) {
  const button = (action, label, extra = {}) => h('button', {
    type: 'button', class: `small${extra.danger ? ' danger-text' : ''}`,
    'data-action': action, 'data-version': release.version,
    'aria-label': `${label}: ${service.name} ${release.version}`,
  }, label);
  const isMain = release.role === 'main';
  const isCanary = release.role === 'canary';
  return h('div', { class: 'actions' },
    isMain ? null : button('assign', 'Make main'),
    isMain ? null : button('promote', 'Promote'),
    isMain ? null : button('canary', isCanary ? 'Share…' : 'Canary…'),
    isCanary ? button('abort', 'End canary', { danger: true }) : null,
    button('kill', 'Kill', { danger: true }));
}

/**
 * The releases of `service` with `statuses` (from `/status`); with
 * `actions`, a column of buttons.
 */
export function releaseTable(service, statuses, { actions = false } = {}) {
  const byVersion = new Map(statuses.map((s) => [s.version, s]));
  const columns = ['version', 'role', 'health', 'num', 'num', 'num', 'since'];
  if (actions) columns.push('actions');
  return h('table', { class: `releases${actions ? ' with-actions' : ''}`, 'data-key': `releases-${service.name}` },
    h('caption', { class: 'visually-hidden' }, `Releases of ${service.name}`),
    h('colgroup', {}, columns.map((c) => h('col', { class: `col-${c}` }))),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Version'),
      h('th', { scope: 'col' }, 'Role'),
      h('th', { scope: 'col' }, 'Health'),
      h('th', { scope: 'col', class: 'num' }, 'Req/s'),
      h('th', { scope: 'col', class: 'num' }, 'Errors'),
      h('th', { scope: 'col', class: 'num' }, 'p99'),
      h('th', { scope: 'col' }, 'Since'),
      actions ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')) : null)),
    h('tbody', {}, service.releases.map((release) => {
      const minute = byVersion.get(release.version)?.last_minute;
      const errorClass = minute && minute.errors > 0 ? 'num bad-text' : 'num';
      return h('tr', { 'data-key': release.version, 'data-version': release.version, 'data-role': release.role },
        h('th', { scope: 'row', class: 'version' },
          swatch(colorOf(service, release.version)), release.version,
          release.pinned ? h('span', { class: 'muted small-text' }, ` pinned ${release.pinned}`) : null),
        h('td', {}, roleBadge(release, service.policy)),
        h('td', {}, health(release)),
        h('td', { class: 'num', title: minute ? `${count(minute.requests)} requests in the last ${Math.round(minute.seconds)} s` : null },
          minute ? rate(minute.rate_per_second) : '—'),
        h('td', { class: errorClass, title: minute ? `${count(minute.errors)} errors` : null },
          minute ? percent(minute.error_rate) : '—'),
        h('td', { class: 'num' }, minute ? millis(minute.p99_ms) : '—'),
        h('td', { class: 'muted' }, ago(release.since)),
        actions ? h('td', {}, actionButtons(service, release)) : null);
    })));
}

/** Where the service is reached: its host names and its path prefix. */
export function routesLine(service) {
  return h('p', { class: 'reach' },
    h('span', { class: 'label' }, 'Reached at'),
    h('code', {}, `/services/${service.name}/`),
    service.hosts.map((host) => h('code', { 'data-key': host }, host)));
}

/** Badges for a service held by an upgrade or paused. */
export function stateBadges(service) {
  return [
    service.upgrading ? h('span', { class: 'badge state-upgrading' }, service.upgrading) : null,
    service.paused ? h('span', { class: 'badge state-paused' }, `traffic paused since ${ago(service.paused.since)}`) : null,
  ];
}
