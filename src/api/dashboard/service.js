// One service: its releases with the actions on them, the traffic
// picture, charts of the last minutes per release, the rollout and the
// upgrade under way, the shadow report, events and history.

import { setShown } from './actions.js';
import { get, getOrNone } from './api.js';
import { lineChart } from './chart.js';
import { h, seg } from './dom.js';
import { millis, rate } from './format.js';
import { progress } from './progress.js';
import { eventList, historyTable, shadowSection } from './records.js';
import { colorOf, releaseTable, roleText, routesLine, stateBadges, swatch } from './releases.js';
import { trafficPicture } from './traffic.js';

/** The fewest periods the charts span, so that two points make no wall. */
const FEWEST_PERIODS = 4;

function charts(service, trends) {
  const times = trends.releases.flatMap((r) => r.points.map((p) => p.at));
  const to = times.length ? Math.max(...times) : Date.now();
  const earliest = times.length ? Math.min(...times) : to;
  // As far back as there are points, up to the window: a young serve's
  // few points fill the chart rather than huddle at its right edge.
  const span = Math.min(
    Math.max(to - earliest, FEWEST_PERIODS * trends.every_seconds * 1000),
    trends.window_seconds * 1000,
  );
  const from = to - span;
  const series = (value, dashed = false) => trends.releases.map((release) => ({
    key: `${release.version}${dashed ? '-dashed' : ''}`,
    color: colorOf(service, release.version),
    dashed,
    points: release.points.map((p) => ({ t: p.at, v: value(p) })),
  }));
  return h('section', { class: 'panel', 'aria-labelledby': 'charts-title', 'data-key': 'charts' },
    h('div', { class: 'panel-head' },
      h('h2', { id: 'charts-title' }, 'Last minutes'),
      h('ul', { class: 'legend' }, service.releases.map((release) => h('li', { 'data-key': release.version },
        swatch(colorOf(service, release.version)), release.version, ' ',
        h('span', { class: 'muted' }, roleText(release, service.policy))))),
      h('span', { class: 'muted small-text' }, `a point every ${trends.every_seconds} s, kept ${Math.round(trends.window_seconds / 60)} min`)),
    h('div', { class: 'charts' },
      lineChart({
        title: 'Requests', series: series((p) => p.rate_per_second), from, to, floor: 1, format: rate,
      }),
      lineChart({
        title: 'Errors (5xx)', series: series((p) => p.error_rate * 100), from, to, floor: 1,
        format: (v) => `${v} %`,
      }),
      lineChart({
        title: 'Latency',
        note: 'p99 solid, p50 dashed',
        series: [...series((p) => p.p99_ms), ...series((p) => p.p50_ms, true)],
        from, to, floor: 1, format: millis,
      })));
}

export function servicePage(name) {
  const base = `/v1/services/${seg(name)}`;
  return {
    id: `service-${name}`,
    title: name,
    crumbs: [name],
    async load() {
      const [service, statuses, routes, trends, rollout, upgrade, reports, events, history] = await Promise.all([
        get(base), get(`${base}/status`), get(`${base}/routes`), get(`${base}/trends`),
        getOrNone(`${base}/rollout`), getOrNone(`${base}/upgrade`), get(`${base}/shadows/report`),
        get(`${base}/events?limit=30`), get(`${base}/history?limit=30`),
      ]);
      return { service, statuses, routes, trends, rollout, upgrade, reports, events, history };
    },
    render(data) {
      const { service } = data;
      setShown({ service, history: data.history, rollout: data.rollout, upgrade: data.upgrade });
      return h('div', { class: 'page' },
        h('div', { class: 'page-head' },
          h('h1', { tabindex: '-1' }, service.name, h('span', { class: 'muted rev' }, ` revision ${service.revision}`)),
          stateBadges(service),
          routesLine(service),
          h('p', { class: 'muted' },
            service.main ? `Main: ${service.main}` : 'No main',
            service.schema ? ` · database schema ${service.schema}` : '')),
        h('section', { class: 'panel', 'aria-labelledby': 'releases-title', 'data-key': 'releases' },
          h('h2', { id: 'releases-title' }, 'Releases'),
          releaseTable(service, data.statuses, { actions: true })),
        h('div', { class: 'columns' },
          trafficPicture(service, data.routes),
          progress(service, data.rollout, data.upgrade)),
        charts(service, data.trends),
        shadowSection(service, data.reports),
        h('div', { class: 'columns' },
          eventList(data.events),
          historyTable(service, data.history)));
    },
  };
}
