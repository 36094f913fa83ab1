// What happened: the shadow report (match rate, the fields that differ,
// examples), the events, and the revision history with a way back to
// each revision.

import { h } from './dom.js';
import { ago, clock, count, dateTime, percent } from './format.js';
import { colorOf, swatch } from './releases.js';

function example(sample, i) {
  return h('li', { 'data-key': `${i}` },
    h('p', {}, h('code', {}, sample.request), h('span', { class: 'muted' }, ` · ${sample.kind} · ${sample.at}`)),
    h('div', { class: 'pair' },
      h('div', {}, h('span', { class: 'label' }, 'main'), h('pre', {}, sample.main)),
      h('div', {}, h('span', { class: 'label' }, 'shadow'), h('pre', {}, sample.shadow))));
}

function fieldRows(report) {
  return report.fields.map((field) => h('tr', { 'data-key': field.field, class: field.real ? null : 'noise' },
    h('th', { scope: 'row' }, h('code', {}, field.field)),
    h('td', { class: 'num' }, count(field.diffs)),
    h('td', { class: 'num' }, percent(field.rate)),
    h('td', {}, field.real ? field.kinds.join(', ') : `noise (main differs from itself ${percent(field.noise_rate)})`)));
}

function shadowReport(service, report) {
  const stats = [
    ['mirrored', report.mirrored], ['compared', report.compared], ['matched', report.matched],
    ['dropped', report.dropped], ['too large', report.too_large], ['shadow errors', report.shadow_errors],
  ];
  const withExamples = report.fields.filter((f) => f.examples.length);
  return h('div', { class: 'shadow-report', 'data-key': report.version },
    h('h3', {}, swatch(colorOf(service, report.version)), `${report.version}: `,
      report.match_rate === null ? 'nothing compared yet' : `${percent(report.match_rate)} match`),
    h('dl', { class: 'stats' }, stats.map(([label, value]) =>
      h('div', { 'data-key': label }, h('dt', {}, label), h('dd', {}, count(value))))),
    report.fields.length
      ? h('table', { class: 'fields' },
        h('caption', {}, 'Fields that differ'),
        h('colgroup', {}, ['field', 'num', 'num', 'kinds'].map((c) => h('col', { class: `col-${c}` }))),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col', class: 'num' }, 'Differed'),
          h('th', { scope: 'col', class: 'num' }, 'Rate'), h('th', { scope: 'col' }, 'How'))),
        h('tbody', {}, fieldRows(report)))
      : h('p', { class: 'muted' }, 'No field differs.'),
    withExamples.map((field) => h('details', { 'data-key': `ex-${field.field}` },
      h('summary', {}, `Examples where ${field.field} differs (${field.examples.length})`),
      h('ol', { class: 'examples' }, field.examples.map(example)))));
}

/** The shadow section: one report per shadow that was mirrored to. */
export function shadowSection(service, reports) {
  const shown = reports.filter((r) => r.mirrored > 0
    || service.releases.some((rel) => rel.version === r.version && rel.role === 'shadow'));
  const compare = service.compare;
  return h('section', { class: 'panel', 'aria-labelledby': 'shadow-title', 'data-key': 'shadow' },
    h('h2', { id: 'shadow-title' }, 'Shadow report'),
    h('p', { class: 'muted' },
      `Answers are compared on status, body${compare.headers.length ? ` and the headers ${compare.headers.join(', ')}` : ''}`,
      compare.ignore_paths.length ? `, ignoring ${compare.ignore_paths.join(', ')}` : '',
      compare.noise_percent ? `; ${compare.noise_percent} % of copies also go to a second main instance to tell noise` : '',
      '.'),
    shown.length
      ? shown.map((report) => shadowReport(service, report))
      : h('p', { class: 'muted' }, 'No shadow has been mirrored to.'));
}

/** Events, newest first. */
export function eventList(events) {
  return h('section', { class: 'panel', 'aria-labelledby': 'events-title', 'data-key': 'events' },
    h('h2', { id: 'events-title' }, 'Events'),
    events.length
      ? h('ol', { class: 'events scroll' }, events.map((event) => h('li', { 'data-key': `${event.id}` },
        h('time', { datetime: new Date(event.at).toISOString(), title: dateTime(event.at) }, clock(event.at)),
        h('span', { class: `badge kind-${event.kind.replace(/[^a-z-]/g, '')}` }, event.kind),
        h('span', { class: 'message' }, event.message))))
      : h('p', { class: 'muted' }, 'No event yet: rollouts, pauses and upgrades record theirs here.'));
}

/** Revisions, newest first, each but the current with a way back. */
export function historyTable(service, history) {
  return h('section', { class: 'panel', 'aria-labelledby': 'history-title', 'data-key': 'history' },
    h('h2', { id: 'history-title' }, 'History'),
    h('div', { class: 'scroll' },
      h('table', { class: 'history' },
        h('caption', { class: 'visually-hidden' }, `Revisions of ${service.name}, newest first`),
        h('colgroup', {}, ['rev', 'when', 'action', 'actor', 'back'].map((c) => h('col', { class: `col-${c}` }))),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', class: 'num' }, 'Rev'), h('th', { scope: 'col' }, 'When'),
          h('th', { scope: 'col' }, 'Change'), h('th', { scope: 'col' }, 'By'),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Roll back')))),
        h('tbody', {}, history.map((revision) => h('tr', { 'data-key': `${revision.number}` },
          h('td', { class: 'num' }, `${revision.number}`),
          h('td', { class: 'muted', title: dateTime(revision.at) }, ago(revision.at)),
          h('td', { class: 'change' }, revision.action),
          h('td', { class: 'muted' }, revision.actor),
          h('td', {}, revision.number === service.revision
            ? h('span', { class: 'muted' }, 'current')
            : h('button', {
              type: 'button', class: 'small', 'data-action': 'rollback', 'data-revision': revision.number,
              'aria-label': `Roll ${service.name} back to revision ${revision.number}`,
            }, 'Roll back'))))))));
}
