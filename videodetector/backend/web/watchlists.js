// Watch lists: the settings form on a gallery page, and alerts on event cards (every event
// card asks, batched, for its best watch-list match: POST /v1/watchlists/matches).
'use strict';

const THRESHOLDS = [
  ['low', 'Low — confidence 0.57, about 1 in 10 strangers pass'],
  ['medium', 'Medium — confidence 0.66, about 1 in 1,000 strangers pass'],
  ['strict', 'Strict — confidence 0.78, about 1 in 100,000 strangers pass'],
];
const watchQueue = new Map(); // event id -> cards waiting for their match
let watchTimer = null;

function watchListSettingsForm(gallery) {
  if (gallery === 'default') return null;
  const enabled = h('input', { type: 'checkbox', name: 'watchlist', id: 'watch-on' });
  const color = h('input', { type: 'color', name: 'color', value: '#dc2626', id: 'watch-color', 'aria-label': 'Colour' });
  const threshold = h('select', { name: 'threshold', id: 'watch-threshold' },
    THRESHOLDS.map(([value, text]) => h('option', { value }, text)));
  const status = h('p', { class: 'muted small', role: 'status' });
  const form = h('form', { class: 'card camera-form', id: 'watch-form' }, h('h2', {}, 'Watch list'),
    h('p', { class: 'muted small' }, 'Camera events that match a face of a watch list are highlighted in its colour on the Events page and counted as alerts.'),
    h('div', { class: 'form-grid' },
      h('label', { class: 'check' }, enabled, 'This gallery is a watch list'),
      h('label', {}, 'Colour', color), h('label', {}, 'Threshold', threshold),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save'))),
    status);
  api('GET', `/v1/galleries/${encodeURIComponent(gallery)}/watchlist`).then((s) => {
    enabled.checked = s.watchlist;
    color.value = s.color;
    threshold.value = s.threshold;
  }).catch(reportError);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const s = await api('PUT', `/v1/galleries/${encodeURIComponent(gallery)}/watchlist`,
        { watchlist: enabled.checked, color: color.value, threshold: threshold.value });
      status.textContent = s.watchlist ? `Saved: a watch list, alerts at confidence ${s.min_confidence} or more.`
        : 'Saved: not a watch list.';
    } catch (err) { status.textContent = err.message; }
  });
  return form;
}

function markAlert(card, match) {
  card.classList.add('is-alert');
  card.style.setProperty('--watch', match.color); // CSSOM: allowed by the CSP
  const label = `${match.gallery}: ${match.meta || `face ${match.face_id}`} · ${match.confidence.toFixed(2)}`;
  card.querySelector('.event-text')?.prepend(h('div', { class: 'watch-hit', title: 'Watch-list match and its confidence' },
    h('span', { class: 'watch-dot' }), label));
}

function countAlerts() {
  const list = document.getElementById('events');
  const head = document.querySelector('.page-head');
  if (!list || !head) return;
  let badge = document.getElementById('alerts');
  if (!badge) {
    badge = h('span', { id: 'alerts', class: 'alerts' });
    head.querySelector('h1')?.after(badge);
  }
  const n = list.querySelectorAll('.event.is-alert').length;
  badge.textContent = `${n} alert${n === 1 ? '' : 's'}`;
  badge.classList.toggle('has-alerts', n > 0);
}

async function flushWatch() {
  watchTimer = null;
  const batch = new Map([...watchQueue].slice(0, 1000));
  for (const id of batch.keys()) watchQueue.delete(id);
  if (watchQueue.size) watchTimer = setTimeout(flushWatch, 0);
  try {
    const data = await api('POST', '/v1/watchlists/matches', { ids: [...batch.keys()] });
    for (const { id, match } of data.results) {
      if (match) for (const card of batch.get(id) || []) markAlert(card, match);
    }
  } catch (err) { /* the cards stay plain; the next page load asks again */ }
  countAlerts();
}

EVENT_CARD_HOOKS.push((card, ev) => {
  if (!watchQueue.has(ev.id)) watchQueue.set(ev.id, []);
  watchQueue.get(ev.id).push(card);
  if (!watchTimer) watchTimer = setTimeout(flushWatch, 30);
});
