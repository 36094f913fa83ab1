// How numbers and times read on the page: short, with their unit, and a
// dash where there is nothing to show.

export const DASH = '—';

const two = (n) => String(n).padStart(2, '0');

/** 14:03:09 in the browser's time zone. */
export function clock(ms) {
  const d = new Date(ms);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** 2026-11-03 14:03 in the browser's time zone. */
export function dateTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

/** How long ago: 12 s, 5 min, 3 h, 2 d. */
export function ago(ms, now = Date.now()) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A duration in seconds: 45 s, 2 min 5 s, 1 h 4 min. */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Three significant digits at most, without trailing zeros: 0.25, 4.5, 12, 340. */
function digits(value) {
  if (value >= 100) return value.toFixed(0);
  const fixed = value.toFixed(value >= 10 ? 1 : 2);
  return fixed.replace(/\.?0+$/, '');
}

/** Requests per second. */
export function rate(perSecond) {
  return perSecond === null || perSecond === undefined ? DASH : `${digits(perSecond)}/s`;
}

/** A ratio from 0 to 1 as a percentage. */
export function percent(ratio) {
  if (ratio === null || ratio === undefined) return DASH;
  const p = ratio * 100;
  if (p === 0) return '0 %';
  return p < 0.01 ? '<0.01 %' : `${digits(p)} %`;
}

/** Milliseconds: 0.77 ms, 12.4 ms, 1.2 s. */
export function millis(ms) {
  if (ms === null || ms === undefined) return DASH;
  return ms >= 1000 ? `${digits(ms / 1000)} s` : `${digits(ms)} ms`;
}

/** A count with thin separators: 12 345. */
export function count(n) {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, '\u202f');
}
