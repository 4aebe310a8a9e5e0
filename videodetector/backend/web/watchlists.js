// Watch lists: the settings form on a gallery page, and alerts on event cards (every event
// card asks, batched, for its best watch-list match: POST /v1/watchlists/matches).
'use strict';

const THRESHOLDS = [
  ['low', 'Low — confidence 0.57, about 1 in 10 strangers pass'],
  ['medium', 'Medium — confidence 0.66, about 1 in 1,000 strangers pass'],
  ['strict', 'Strict — confidence 0.78, about 1 in 100,000 strangers pass'],
];
const watchQueue = new Map(); // event id -> cards waiting for their match
const matchCache = new Map(); // event id -> { match, alert } (bounded)
let watchTimer = null;

function watchListSettingsForm(gallery) {
  if (gallery === 'default') return null;
  const enabled = h('input', { type: 'checkbox', name: 'watchlist', id: 'watch-on' });
  const color = h('input', { type: 'color', name: 'color', value: '#dc2626', id: 'watch-color', 'aria-label': 'Colour' });
  const threshold = h('select', { name: 'threshold', id: 'watch-threshold' },
    THRESHOLDS.map(([value, text]) => h('option', { value }, text)));
  const status = h('p', { class: 'muted small', role: 'status' });
  // Disabled until the current settings are in: filled in later, they would overwrite what
  // the operator had already changed (and a save would store the old settings).
  const fields = h('fieldset', { class: 'form-grid plain', disabled: true },
    h('label', { class: 'check' }, enabled, 'This gallery is a watch list'),
    h('label', {}, 'Colour', color), h('label', {}, 'Threshold', threshold),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save')));
  const form = h('form', { class: 'card camera-form', id: 'watch-form' }, h('h2', {}, 'Watch list'),
    h('p', { class: 'muted small' }, 'Camera events that match a face of a watch list are highlighted in its colour on the Events page and counted as alerts.'),
    fields, status);
  api('GET', `/v1/galleries/${encodeURIComponent(gallery)}/watchlist`).then((s) => {
    enabled.checked = s.watchlist;
    color.value = s.color;
    threshold.value = s.threshold;
    fields.disabled = false;
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

function markUnknown(card) {
  card.classList.add('is-alert', 'is-unknown');
  card.querySelector('.event-text')?.prepend(h('div', { class: 'watch-hit', title: 'No watch list knows this face' },
    h('span', { class: 'watch-dot' }), 'Unknown face'));
}

// "Unknown face" alerts per camera (on the Galleries page).
function unknownAlertsSection() {
  const list = h('div', { class: 'unknown-cams', id: 'unknown-alerts' });
  const section = h('section', { class: 'card camera-form' }, h('h2', {}, 'Unknown-face alerts'),
    h('p', { class: 'muted small' }, 'On these cameras, an event whose face matches no watch list is an alert too.'), list);
  Promise.all([loadCameras(), api('GET', '/v1/watchlists/cameras')]).then(([cams, on]) => {
    const enabled = new Set(on.results);
    if (!cams.length) list.replaceChildren(h('p', { class: 'muted' }, 'No cameras yet.'));
    for (const cam of cams) {
      const box = h('input', { type: 'checkbox', 'data-cam': cam.id, checked: enabled.has(cam.id) });
      box.addEventListener('change', async () => {
        try {
          await api('PUT', `/v1/watchlists/cameras/${encodeURIComponent(cam.id)}`, { unknown: box.checked });
          showBanner(`Unknown-face alerts ${box.checked ? 'on' : 'off'} for ${cameraName(cam.id)}.`, 'ok');
        } catch (err) { box.checked = !box.checked; reportError(err); }
      });
      list.append(h('label', { class: 'check' }, box, cameraName(cam.id)));
    }
  }).catch(reportError);
  return section;
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

async function watchMatchesOf(ids) {
  const missing = ids.filter((id) => !matchCache.has(id));
  for (let i = 0; i < missing.length; i += 1000) {
    const data = await api('POST', '/v1/watchlists/matches', { ids: missing.slice(i, i + 1000) });
    for (const { id, match, alert } of data.results) matchCache.set(id, { match, alert });
  }
  while (matchCache.size > 20000) matchCache.delete(matchCache.keys().next().value);
  return new Map(ids.map((id) => [id, matchCache.get(id)]));
}

async function watchPasses(id, want) {
  const found = (await watchMatchesOf([id])).get(id);
  return Boolean(found && found.match) === (want === 'match');
}

async function flushWatch() {
  watchTimer = null;
  const batch = new Map([...watchQueue].slice(0, 1000));
  for (const id of batch.keys()) watchQueue.delete(id);
  if (watchQueue.size) watchTimer = setTimeout(flushWatch, 0);
  try {
    const found = await watchMatchesOf([...batch.keys()]);
    for (const [id, result] of found) {
      if (!result || !result.alert) continue;
      for (const card of batch.get(id) || []) {
        if (result.match) markAlert(card, result.match); else markUnknown(card);
      }
    }
  } catch (err) { /* the cards stay plain; the next page load asks again */ }
  countAlerts();
}

EVENT_CARD_HOOKS.push((card, ev) => {
  if (!watchQueue.has(ev.id)) watchQueue.set(ev.id, []);
  watchQueue.get(ev.id).push(card);
  if (!watchTimer) watchTimer = setTimeout(flushWatch, 30);
});

// A watch list may change on another page: matches are asked again after navigation.
window.addEventListener('hashchange', () => matchCache.clear());
