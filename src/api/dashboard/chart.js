// Line charts as inline SVG. The drawing stretches to its box (fixed
// height in the stylesheet, so an update never moves the page); labels
// are HTML around it, so text stays crisp at any width.

import { h, s } from './dom.js';

const WIDTH = 300;
const HEIGHT = 100;

/** 1, 2 or 5 times a power of ten, at least `value`. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/** The SVG path of one series: a gap wherever a value is missing. */
function pathOf(points, x, y) {
  let d = '';
  let drawing = false;
  for (const p of points) {
    if (p.v === null || p.v === undefined) {
      drawing = false;
      continue;
    }
    d += `${drawing ? 'L' : 'M'}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)}`;
    drawing = true;
  }
  return d;
}

/**
 * A chart: `series` are { key, color, dashed, points: [{ t, v }] }, drawn
 * over [from, to] (unix ms), from zero to a round maximum of at least
 * `floor`; `format` writes an axis value.
 */
export function lineChart({ title, series, from, to, floor, format, note }) {
  const highest = Math.max(
    floor,
    ...series.flatMap((line) => line.points.map((p) => p.v ?? 0)),
  );
  const top = niceCeiling(highest);
  const span = Math.max(1, to - from);
  const x = (t) => ((t - from) / span) * WIDTH;
  const y = (v) => HEIGHT - (v / top) * HEIGHT;
  const grid = [0.25, 0.5, 0.75].map((f) =>
    s('line', { class: 'grid', x1: 0, x2: WIDTH, y1: HEIGHT * f, y2: HEIGHT * f, 'vector-effect': 'non-scaling-stroke' }));
  const lines = series.map((line) =>
    s('path', {
      'data-key': line.key,
      class: `line ${line.color}${line.dashed ? ' dashed' : ''}`,
      d: pathOf(line.points, x, y),
      'vector-effect': 'non-scaling-stroke',
    }));
  const back = span < 120000 ? `${Math.round(span / 1000)} s` : `${Math.round(span / 60000)} min`;
  return h('figure', { class: 'chart', 'data-key': `chart-${title}` },
    h('figcaption', {}, h('span', { class: 'chart-title' }, title), note ? h('span', { class: 'chart-note' }, note) : null),
    h('div', { class: 'plot' },
      h('span', { class: 'axis top' }, format(top)),
      h('span', { class: 'axis bottom' }, format(0)),
      s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${title} over the last ${back}` },
        s('rect', { class: 'frame', x: 0, y: 0, width: WIDTH, height: HEIGHT }),
        grid,
        lines)),
    h('div', { class: 'time-axis' }, h('span', {}, `−${back}`), h('span', {}, 'now')));
}
