// The page's one dialog: it says what an action will do, waits for the
// operator's yes, runs the action and shows how it went: a refusal in the
// admin API's own words, in the dialog, until the operator closes it.
// It is modal (the page behind is inert), keeps Tab inside itself, closes
// on Escape (not while the action runs) and gives focus back to the
// button that opened it.

import { h } from './dom.js';

const FOCUSABLE = 'button:not([disabled]), input:not([disabled]), a[href]';

let dialog = null;
let working = false;
let opener = null;

function element() {
  if (dialog) return dialog;
  dialog = h('dialog', { id: 'dialog', 'aria-labelledby': 'dialog-title', 'aria-describedby': 'dialog-body' });
  dialog.addEventListener('cancel', (event) => {
    if (working) event.preventDefault();
  });
  dialog.addEventListener('close', () => {
    const back = opener && opener.isConnected ? opener : document.getElementById('main');
    back.focus();
  });
  dialog.addEventListener('keydown', (event) => {
    if (event.key !== 'Tab') return;
    const stops = [...dialog.querySelectorAll(FOCUSABLE)];
    if (stops.length === 0) return;
    const first = stops[0];
    const last = stops[stops.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });
  document.body.append(dialog);
  return dialog;
}

/** How long a notice stays. */
const NOTICE_MS = 12000;
let noticeTimer = null;

/**
 * Shows a line in the notice area (read out by screen readers), floating
 * over the page's corner so that nothing below it moves.
 */
export function notice(text) {
  const area = document.getElementById('notice');
  area.replaceChildren(h('p', {}, text));
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => area.replaceChildren(), NOTICE_MS);
}

/**
 * Asks before an action. `lines` say what will happen; `input`, when
 * given ({ label, min, max, value, unit }), asks for a whole number that
 * `run(value)` receives. `run` resolves to the line shown once done.
 */
export function ask({ title, lines, confirmLabel, danger, input, run }) {
  const box = element();
  opener = document.activeElement;
  const error = h('p', { class: 'dialog-error', role: 'alert', hidden: true });
  const field = input
    ? h('input', {
      id: 'dialog-input', type: 'number', inputmode: 'numeric', required: true,
      min: input.min, max: input.max, step: 1, value: input.value,
    })
    : null;
  const cancel = h('button', { type: 'button', class: 'quiet' }, 'Cancel');
  const confirm = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, confirmLabel);
  const form = h('form', { class: 'dialog-form', novalidate: true },
    h('h2', { id: 'dialog-title' }, title),
    h('div', { id: 'dialog-body' }, lines.map((line) => h('p', {}, line))),
    field
      ? h('p', { class: 'dialog-field' },
        h('label', { for: 'dialog-input' }, input.label), field,
        input.unit ? h('span', { class: 'unit' }, input.unit) : null)
      : null,
    error,
    h('div', { class: 'dialog-buttons' }, cancel, confirm));

  const busy = (on) => {
    working = on;
    confirm.disabled = on;
    cancel.disabled = on;
    if (field) field.disabled = on;
    confirm.textContent = on ? 'Working…' : confirmLabel;
    form.setAttribute('aria-busy', on ? 'true' : 'false');
  };
  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
  };

  cancel.addEventListener('click', () => box.close());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (working) return;
    let value;
    if (field) {
      value = Number(field.value);
      if (field.value.trim() === '' || !Number.isInteger(value) || value < input.min || value > input.max) {
        fail(`Give a whole number from ${input.min} to ${input.max}.`);
        field.focus();
        return;
      }
    }
    error.hidden = true;
    busy(true);
    try {
      const done = await run(value);
      busy(false);
      box.close();
      notice(done);
    } catch (refusal) {
      busy(false);
      fail(refusal.message);
      cancel.textContent = 'Close';
      cancel.focus();
    }
  });

  box.replaceChildren(form);
  box.classList.toggle('is-danger', Boolean(danger));
  box.showModal();
  (field ?? (danger ? cancel : confirm)).focus();
}
