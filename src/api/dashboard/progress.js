// What is under way: the running rollout (its plan, the step it is on,
// every check's measured value against its threshold, time to the next
// step) and the upgrade in progress (its plan, the steps done).

import { h } from './dom.js';
import { ago, duration } from './format.js';

function stepLabel(step, analysis) {
  switch (step.step) {
    case 'set-weight': return `weight ${step.percent} %`;
    case 'pause': return step.seconds === null || step.seconds === undefined
      ? 'pause until resumed'
      : `pause ${duration(step.seconds)}`;
    case 'analysis': return `analysis ${duration(analysis.interval_seconds)}`;
    default: return step.step;
  }
}

function statusBadge(status) {
  const state = status.state;
  const kind = { running: 'ok', paused: 'warn', succeeded: 'ok', 'promoted-by-hand': 'ok', failed: 'bad', aborted: 'bad' }[state] ?? 'warn';
  return h('span', { class: `badge state-${kind}` }, state);
}

function steps(list, position, labels) {
  return h('ol', { class: 'steps' }, list.map((step, i) => {
    const where = i < position ? 'done' : i === position ? 'current' : 'todo';
    return h('li', { 'data-key': `${i}`, class: where, 'aria-current': where === 'current' ? 'step' : null },
      h('span', { class: 'step-n' }, `${i + 1}`), labels(step, i));
  }));
}

function checksTable(checks) {
  return h('table', { class: 'checks' },
    h('caption', {}, 'Checks of the last analysis'),
    h('colgroup', {}, ['name', 'measured', 'threshold', 'verdict'].map((c) => h('col', { class: `col-${c}` }))),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Check'),
      h('th', { scope: 'col', class: 'num' }, 'Measured'),
      h('th', { scope: 'col', class: 'num' }, 'Threshold'),
      h('th', { scope: 'col' }, 'Verdict'))),
    h('tbody', {}, checks.map((check) => h('tr', { 'data-key': check.name },
      h('th', { scope: 'row' }, check.name),
      h('td', { class: 'num' }, check.measured),
      h('td', { class: 'num muted' }, check.threshold),
      h('td', {}, h('span', { class: `verdict ${check.verdict}` }, check.verdict))))));
}

function rolloutPanel(rollout) {
  const { state } = rollout;
  const active = state.status.state === 'running' || state.status.state === 'paused';
  const plan = state.plan;
  const when = state.status.state === 'paused'
    ? state.status.reason
    : rollout.next_in_seconds !== null && rollout.next_in_seconds !== undefined
      ? `next step in ${duration(rollout.next_in_seconds)}`
      : rollout.current;
  return h('div', { class: 'rollout', 'data-key': `rollout-${state.started_at}` },
    h('h3', {}, `Rollout of ${plan.version} `, statusBadge(state.status)),
    active
      ? h('p', { class: 'now' }, h('strong', {}, `Step ${Math.min(state.step + 1, plan.steps.length)} of ${plan.steps.length}: ${rollout.current}`), h('span', { class: 'muted' }, ` · ${when}`))
      : h('p', { class: 'muted' }, `Started ${ago(state.started_at)}${state.status.reason ? `; ${state.status.reason}` : ''}`),
    steps(plan.steps, active ? state.step : plan.steps.length, (step) => stepLabel(step, plan.analysis)),
    state.checks.length ? checksTable(state.checks) : h('p', { class: 'muted' }, 'No analysis has run yet.'),
    active
      ? h('div', { class: 'actions' },
        state.status.state === 'paused'
          ? h('button', { type: 'button', 'data-action': 'rollout-resume' }, 'Resume rollout')
          : h('button', { type: 'button', 'data-action': 'rollout-pause' }, 'Pause rollout'),
        h('button', { type: 'button', 'data-action': 'rollout-promote' }, 'Promote to next step'),
        h('button', { type: 'button', 'data-action': 'rollout-promote-full' }, 'Promote fully'),
        h('button', { type: 'button', class: 'danger-text', 'data-action': 'rollout-abort' }, 'Abort rollout'))
      : null);
}

function upgradePanel(upgrade) {
  const active = upgrade.status === 'running' || upgrade.status === 'waiting';
  const done = upgrade.steps.length;
  const kind = { running: 'ok', waiting: 'warn', done: 'ok' }[upgrade.status] ?? 'bad';
  return h('div', { class: 'upgrade', 'data-key': `upgrade-${upgrade.started_at}` },
    h('h3', {}, `Upgrade to ${upgrade.to} `, h('span', { class: `badge state-${kind}` }, upgrade.status)),
    h('p', { class: 'muted' },
      `Started ${ago(upgrade.started_at)} by ${upgrade.actor}`,
      upgrade.waiting_until ? `; goes on in ${duration((upgrade.waiting_until - Date.now()) / 1000)}` : '',
      upgrade.abort_requested ? '; stops after the running step' : ''),
    upgrade.error ? h('p', { class: 'bad-text' }, upgrade.error) : null,
    h('table', { class: 'plan' },
      h('caption', {}, `Plan from ${upgrade.plan.from} to ${upgrade.plan.to}`),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Step'),
        h('th', { scope: 'col' }, 'Schema'),
        h('th', { scope: 'col' }, 'Back'),
        h('th', { scope: 'col' }, 'State'))),
      h('tbody', {}, upgrade.plan.steps.map((step, i) => {
        const state = i < done
          ? `done (revision ${upgrade.steps[i].revision})`
          : i === done && active ? (upgrade.status === 'waiting' ? 'next' : 'running') : '—';
        return h('tr', { 'data-key': `${i}`, class: i === done && active ? 'current' : null },
          h('th', { scope: 'row' }, `${step.from} → ${step.to}`),
          h('td', {}, step.schema_before === step.schema_after ? (step.schema_after ?? '—') : `${step.schema_before ?? '—'} → ${step.schema_after ?? '—'}`),
          h('td', {}, step.reversible ? 'reversible' : 'one way'),
          h('td', {}, state, step.broken.length ? h('span', { class: 'bad-text' }, ` · ${step.broken.join('; ')}`) : null));
      }))),
    active
      ? h('div', { class: 'actions' },
        upgrade.status === 'waiting'
          ? h('button', { type: 'button', 'data-action': 'upgrade-continue' }, 'Go on with the upgrade')
          : null,
        h('button', { type: 'button', class: 'danger-text', 'data-action': 'upgrade-abort' }, 'Stop the upgrade'))
      : null);
}

/** The rollout and upgrade section of a service. */
export function progress(service, rollout, upgrade) {
  return h('section', { class: 'panel', 'aria-labelledby': 'progress-title', 'data-key': 'progress' },
    h('h2', { id: 'progress-title' }, 'Rollout and upgrade'),
    rollout ? rolloutPanel(rollout) : h('p', { class: 'muted', 'data-key': 'no-rollout' }, `No rollout has run. Start one with: switchyard rollout ${service.name} VERSION --steps 5,25,50,100`),
    upgrade ? upgradePanel(upgrade) : null);
}
