// The dashboard's entry: picks the page from the address (#/ for every
// service, #/services/NAME for one), loads its data from the admin API
// every two seconds and patches the page in place. With a token
// configured, the admin API answers 401 until the operator signs in; the
// page then shows the sign-in form and no data.

import { listenForActions, setShown } from './actions.js';
import { Refused, Unauthorized, token } from './api.js';
import { h, morph, seg } from './dom.js';
import { clock } from './format.js';
import { servicePage } from './service.js';
import { servicesPage } from './services.js';

const EVERY_MS = 2000;

const main = document.getElementById('main');
const crumbs = document.getElementById('crumbs');
const live = document.getElementById('live');
const signOut = document.getElementById('sign-out');

/** Bumped whenever the page changes, so answers for an old page are dropped. */
let generation = 0;
let timer = null;
let reload = () => {};

function pageFor(hash) {
  const match = /^#\/services\/([a-z0-9-]+)$/.exec(hash);
  return match ? servicePage(match[1]) : servicesPage();
}

function setLive(state, text) {
  live.className = `live ${state}`;
  live.textContent = text;
}

function setCrumbs(trail) {
  const items = [h('li', {}, trail.length
    ? h('a', { href: '#/' }, 'Services')
    : h('span', { 'aria-current': 'page' }, 'Services'))];
  trail.forEach((label, i) => items.push(h('li', {},
    i === trail.length - 1
      ? h('span', { 'aria-current': 'page' }, label)
      : h('a', { href: `#/services/${seg(label)}` }, label))));
  crumbs.replaceChildren(h('ol', {}, items));
}

function focusHeading() {
  const heading = main.querySelector('h1');
  (heading ?? main).focus();
}

function showLogin(refusal) {
  generation += 1;
  clearTimeout(timer);
  setShown({});
  const given = token.get();
  token.clear();
  signOut.hidden = true;
  crumbs.replaceChildren();
  setLive('off', 'Signed out');
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
  const form = h('form', { class: 'login panel', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in'),
    h('p', {}, 'This serve asks for the token in its --token-file. It is kept in this tab only, until the tab closes, and sent with every call as a bearer token.'),
    given ? h('p', { class: 'dialog-error', role: 'alert' }, `That token was refused: ${refusal.message}`) : null,
    h('p', { class: 'dialog-field stacked' }, h('label', { for: 'token' }, 'Token'), input),
    h('div', { class: 'dialog-buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    token.set(value);
    show(true);
  });
  main.dataset.page = 'login';
  main.replaceChildren(form);
  input.focus();
}

function failure(error) {
  return h('div', { class: 'page' },
    h('h1', { tabindex: '-1' }, error instanceof Refused && error.status === 404 ? 'Not found' : 'Cannot show this page'),
    h('p', { class: 'dialog-error', role: 'alert' }, error.message),
    h('p', {}, h('a', { href: '#/' }, 'Back to every service')));
}

/** Shows the page of the current address and keeps it up to date. */
function show(moveFocus) {
  generation += 1;
  const mine = generation;
  clearTimeout(timer);
  const page = pageFor(location.hash);
  setCrumbs(page.crumbs);
  document.title = `${page.title} · Switchyard`;
  signOut.hidden = !token.get();
  let fresh = true;

  const tick = async () => {
    if (mine !== generation) return;
    clearTimeout(timer);
    if (document.hidden && !fresh) {
      timer = setTimeout(tick, EVERY_MS);
      return;
    }
    try {
      const data = await page.load();
      if (mine !== generation) return;
      const view = page.render(data);
      if (fresh || main.dataset.page !== page.id || !main.firstElementChild) {
        main.dataset.page = page.id;
        main.replaceChildren(view);
        if (moveFocus) focusHeading();
      } else {
        morph(main.firstElementChild, view);
      }
      fresh = false;
      setLive('on', `Live · ${clock(Date.now())}`);
    } catch (error) {
      if (mine !== generation) return;
      if (error instanceof Unauthorized) {
        showLogin(error);
        return;
      }
      if (fresh) {
        main.dataset.page = 'failure';
        main.replaceChildren(failure(error));
        if (error instanceof Refused) {
          setLive('off', 'Not live');
          return;
        }
      }
      setLive('down', `Not updating: ${error.message}`);
    }
    timer = setTimeout(tick, EVERY_MS);
  };
  reload = tick;
  tick();
}

signOut.addEventListener('click', () => {
  token.clear();
  showLogin(new Unauthorized(''));
});
window.addEventListener('hashchange', () => show(true));
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) reload();
});
listenForActions(() => reload());
show(false);
