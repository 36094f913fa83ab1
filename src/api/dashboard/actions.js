// What the buttons do. A button says which action it is and on what
// (data-action, data-version, data-revision); one listener finds it, and
// the dialog says what will happen before anything is sent. Every change
// carries the revision the page showed, so a service changed meanwhile
// is refused ("changed meanwhile") rather than changed blindly.

import { change } from './api.js';
import { ask } from './dialog.js';
import { seg } from './dom.js';
import { duration } from './format.js';

/** What the service page shows now: { service, history, rollout, upgrade }. */
let shown = {};

export function setShown(value) {
  shown = value;
}

const path = (name, ...rest) => ['/v1/services', seg(name), ...rest].join('/');

const revisionOf = (answer) => `revision ${answer.revision.number}`;

const ACTIONS = {
  assign({ service, version }) {
    return {
      title: `Make ${service.name} ${version} main?`,
      lines: [
        `From the next request on, every request that no opt-in, rule or canary sends elsewhere goes to ${version}; requests in flight finish where they are.`,
        service.main ? `${service.main}, main now, keeps running as standby, ready to take over again.` : null,
        `Refused unless every instance of ${version} is healthy right now.`,
      ],
      confirmLabel: `Make ${version} main`,
      run: async () => {
        const answer = await change('POST', path(service.name, 'assign'),
          { version, base_revision: service.revision });
        return `${service.name} ${version} is main (${revisionOf(answer)}).`;
      },
    };
  },

  promote({ service, version }) {
    return {
      title: `Promote ${service.name} ${version}?`,
      lines: [
        `Waits until every instance of ${version} is healthy (up to its ready timeout), then makes it main: every request that no opt-in, rule or canary sends elsewhere goes to it.`,
        `If ${version} is the canary or the opt-in candidate, it stops being one.`,
        service.main ? `${service.main}, main now, keeps running as standby.` : null,
      ],
      confirmLabel: `Promote ${version}`,
      run: async () => {
        const answer = await change('POST', path(service.name, 'promote'),
          { version, base_revision: service.revision });
        return `${service.name} ${version} promoted to main (${revisionOf(answer)}).`;
      },
    };
  },

  canary({ service, version }) {
    const canary = service.policy.canary;
    const other = canary && canary.version !== version ? canary.version : null;
    return {
      title: `Canary share of ${service.name} ${version}`,
      lines: [
        `This share of ${service.name}'s clients goes to ${version}, sticky per client: a client stays on its side from request to request. The others stay on main ${service.main ?? ''}.`,
        'Raising the share keeps every client already in; lowering it sends back only those above the new line. 0 % keeps the canary with no clients.',
        other ? `Refused while ${other} is the canary: promote or abort it first.` : null,
      ],
      input: {
        label: 'Share of clients', unit: '%', min: 0, max: 100,
        value: canary && canary.version === version ? canary.percent : 5,
      },
      confirmLabel: 'Set the share',
      run: async (percent) => {
        const answer = await change('POST', path(service.name, 'canary'),
          { version, percent, base_revision: service.revision });
        return `${service.name} canary ${version} at ${percent} % (${revisionOf(answer)}).`;
      },
    };
  },

  abort({ service }) {
    const version = service.policy.canary?.version ?? '';
    return {
      title: `End the canary ${service.name} ${version}?`,
      lines: [
        `Every client goes back to main ${service.main ?? ''} at once; ${version} keeps running as standby.`,
        'A rollout of it stops too.',
      ],
      confirmLabel: 'End the canary',
      danger: true,
      run: async () => {
        const answer = await change('POST', path(service.name, 'abort'),
          { base_revision: service.revision });
        return `${service.name}: canary ${version} ended, every client on main (${revisionOf(answer)}).`;
      },
    };
  },

  kill({ service, version }) {
    const release = service.releases.find((r) => r.version === version);
    return {
      title: `Kill ${service.name} ${version}?`,
      lines: [
        `${version} leaves the routing table at once; its requests in flight finish (up to serve's drain timeout), then its instances are stopped.`,
        `It is gone from ${service.name}: to run it again, deploy it again.`,
        release?.role === 'main' ? 'Main can go only when it is the last release of the service.' : null,
        release?.role === 'canary' ? 'Its canary share ends with it.' : null,
      ],
      confirmLabel: `Kill ${version}`,
      danger: true,
      run: async () => {
        const answer = await change('DELETE',
          `${path(service.name, 'releases', seg(version))}?base_revision=${service.revision}`);
        return `${service.name} ${version} killed (${revisionOf(answer)}).`;
      },
    };
  },

  rollback({ service, history, revision }) {
    const target = history.find((r) => r.number === revision);
    return {
      title: `Roll ${service.name} back to revision ${revision}?`,
      lines: [
        `A new revision equal to revision ${revision}${target ? ` (${target.action})` : ''} is made: its releases, roles and traffic policy come back.`,
        'Releases it needs that no longer run are started again and must be ready before traffic switches; releases it does not have are drained and stopped.',
      ],
      confirmLabel: `Roll back to ${revision}`,
      danger: true,
      run: async () => {
        const answer = await change('POST', path(service.name, 'rollback'),
          { revision, base_revision: service.revision });
        return `${service.name} rolled back to revision ${revision} (now ${revisionOf(answer)}).`;
      },
    };
  },

  'rollout-resume'({ service, rollout }) {
    const version = rollout.state.plan.version;
    return {
      title: `Resume the rollout of ${service.name} ${version}?`,
      lines: [
        'The rollout leaves the step it waits at and goes on with the next one.',
      ],
      confirmLabel: 'Resume the rollout',
      run: async () => {
        const state = await change('POST', path(service.name, 'rollout', 'resume'), {});
        return `${service.name}: rollout of ${version} resumed at step ${state.step + 1} of ${state.plan.steps.length}.`;
      },
    };
  },

  'rollout-pause'({ service, rollout }) {
    const { state } = rollout;
    const version = state.plan.version;
    const at = Math.min(state.step + 1, state.plan.steps.length);
    return {
      title: `Pause the rollout of ${service.name} ${version}?`,
      lines: [
        `The rollout holds at step ${at} of ${state.plan.steps.length} (${rollout.current}); clients keep the share they have now.`,
        `Resume runs that step again. Paused longer than its stuck limit (${duration(state.plan.stuck_limit_seconds)}), it rolls back.`,
      ],
      confirmLabel: 'Pause the rollout',
      run: async () => {
        const paused = await change('POST', path(service.name, 'rollout', 'pause'), {});
        return `${service.name}: rollout of ${version} paused at step ${paused.step + 1} of ${paused.plan.steps.length}.`;
      },
    };
  },

  'rollout-promote'({ service, rollout }) {
    const { state } = rollout;
    const version = state.plan.version;
    const at = Math.min(state.step + 1, state.plan.steps.length);
    const last = state.step + 1 >= state.plan.steps.length;
    return {
      title: `Skip step ${at} of the rollout of ${service.name} ${version}?`,
      lines: [
        `Step ${at} (${rollout.current}) is skipped without waiting or judging it.`,
        last
          ? `It is the last step: ${version} becomes main.`
          : `The rollout goes on with step ${at + 1} of ${state.plan.steps.length}.`,
      ],
      confirmLabel: 'Skip to the next step',
      run: async () => {
        const next = await change('POST', path(service.name, 'rollout', 'promote'), { full: false });
        return `${service.name}: rollout of ${version} skipped to step ${Math.min(next.step + 1, next.plan.steps.length)} of ${next.plan.steps.length}.`;
      },
    };
  },

  'rollout-promote-full'({ service, rollout }) {
    const version = rollout.state.plan.version;
    return {
      title: `Make ${service.name} ${version} main now?`,
      lines: [
        `Every step left is skipped: ${version} becomes main for every client once all its instances are healthy, and main ${service.main ?? ''} stays running as standby.`,
        'The rollout ends, recorded as promoted by hand.',
      ],
      confirmLabel: `Promote ${version} fully`,
      danger: true,
      run: async () => {
        await change('POST', path(service.name, 'rollout', 'promote'), { full: true });
        return `${service.name}: ${version} is main; the rollout ended, promoted by hand.`;
      },
    };
  },

  'rollout-abort'({ service, rollout }) {
    const version = rollout.state.plan.version;
    return {
      title: `Abort the rollout of ${service.name} ${version}?`,
      lines: [
        `The rollout ends and every client goes back to main ${service.main ?? ''} at once; ${version} keeps running as standby.`,
      ],
      confirmLabel: 'Abort the rollout',
      danger: true,
      run: async () => {
        await change('POST', path(service.name, 'rollout', 'abort'), {});
        return `${service.name}: rollout of ${version} aborted, every client on main.`;
      },
    };
  },

  'upgrade-continue'({ service, upgrade }) {
    return {
      title: `Go on with the upgrade of ${service.name} to ${upgrade.to}?`,
      lines: ['The upgrade leaves its wait between two steps and runs the next step: its hooks, its deploy, its switch.'],
      confirmLabel: 'Go on',
      run: async () => {
        await change('POST', path(service.name, 'upgrade', 'continue'), {});
        return `${service.name}: the upgrade to ${upgrade.to} goes on.`;
      },
    };
  },

  'upgrade-abort'({ service, upgrade }) {
    return {
      title: `Stop the upgrade of ${service.name} to ${upgrade.to}?`,
      lines: [
        'The upgrade stops at the next step boundary; the steps done stay done, and the service stays at the last step that finished.',
      ],
      confirmLabel: 'Stop the upgrade',
      danger: true,
      run: async () => {
        await change('POST', path(service.name, 'upgrade', 'abort'), {});
        return `${service.name}: the upgrade to ${upgrade.to} stops at the next step boundary.`;
      },
    };
  },
};

/** Listens for every action button; `refresh` reloads the page's data. */
export function listenForActions(refresh) {
  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const make = button && ACTIONS[button.dataset.action];
    if (!make || !shown.service) return;
    const spec = make({
      ...shown,
      version: button.dataset.version,
      revision: Number(button.dataset.revision),
    });
    ask({
      ...spec,
      lines: spec.lines.filter(Boolean),
      run: async (value) => {
        try {
          return await spec.run(value);
        } finally {
          refresh();
        }
      },
    });
  });
}
