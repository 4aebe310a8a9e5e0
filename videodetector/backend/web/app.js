// videodetector operator console: plain JavaScript, no build step, no third-party code.
// Data is always put into the page as text (textContent / attributes), never as HTML.
'use strict';

const PAGE = 24;
const MAX_LIVE_CARDS = 300; // a console left open for days keeps only this many in the page
// Pages in other files (galleries.js, ...) register here: PAGES[route name] = (hash) => view.
const PAGES = {};
// Functions (card, event) called for every event card made (watchlists.js marks alerts).
const EVENT_CARD_HOOKS = [];
const state = { csrf: null, cameras: new Map(), persons: new Map(), stream: null, view: 0 };
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
const TIME = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

// ---------------------------------------------------------------- DOM helpers

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'value') node.value = value;
    else if (key === 'checked') { node.defaultChecked = true; node.checked = true; }
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (sel) => document.querySelector(sel);
const main = () => $('#main');

function setMain(...children) {
  closeStream();
  state.view += 1;
  main().replaceChildren(...children);
  return state.view;
}

function showBanner(message, kind = 'error') {
  const banner = $('#banner');
  banner.className = `banner ${kind}`;
  banner.replaceChildren(h('span', { text: message }),
    h('button', { type: 'button', class: 'ghost', 'aria-label': 'Dismiss', onclick: hideBanner }, '×'));
  banner.hidden = false;
}

function hideBanner() { $('#banner').hidden = true; }

function formatTime(ts) {
  if (!ts) return '';
  const date = eventDate({ timestamp: ts });
  return Number.isNaN(date.getTime()) ? ts : TIME.format(date);
}

function emptyState(title, ...lines) {
  return h('div', { class: 'empty' }, h('h2', { text: title }),
    lines.map((line) => h('p', {}, line)));
}

function img(src, alt, cls) {
  return src ? h('img', { src, alt, class: cls, loading: 'lazy' })
    : h('div', { class: `${cls} noimg`, text: 'no image' });
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function describe(status, body) {
  if (body && typeof body.reason === 'string') {
    const param = body.param ? ` (${body.param})` : '';
    return `${body.reason}${param}`;
  }
  const words = { 401: 'not logged in', 403: 'not allowed', 404: 'not found',
    413: 'the upload is too large', 503: 'the backend is not ready' };
  return `The backend answered HTTP ${status}${words[status] ? `: ${words[status]}` : ''}.`;
}

async function api(method, path, body) {
  const options = { method, credentials: 'same-origin', headers: {} };
  if (method !== 'GET') options.headers['X-CSRF-Token'] = state.csrf || '';
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError('Cannot reach the backend. Is fkvideo_backend running?', 0);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
  if (response.status === 401 && path !== '/v1/session') {
    showLogin('Your session has ended. Log in again.');
    throw new ApiError('Not logged in.', 401);
  }
  if (!response.ok) throw new ApiError(describe(response.status, data), response.status);
  return data;
}

function reportError(err) {
  if (err instanceof ApiError && err.status === 401) return;
  showBanner(err instanceof ApiError ? err.message : `Something went wrong: ${err}`);
}

// ---------------------------------------------------------------- login

function showLogin(message) {
  closeStream();
  state.csrf = null;
  $('#topbar').hidden = true;
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off',
    required: true, placeholder: 'API token', 'aria-label': 'API token' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  if (message) error.textContent = message;
  const button = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const form = h('form', { class: 'login card', id: 'login' },
    h('div', { class: 'login-title' }, h('img', { src: '/static/icon.svg', alt: '', width: 40, height: 40 }),
      h('h1', {}, 'videodetector console')),
    h('p', { class: 'muted' }, 'Log in with your API token. Create one with ',
      h('code', {}, 'fkvideo_backend token'), '; you see only that token\u2019s cameras, persons and events.'),
    h('label', { for: 'token' }, 'API token'), input, error, button);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    error.textContent = '';
    try {
      const data = await api('POST', '/v1/session', { token: input.value.trim() });
      input.value = '';
      state.csrf = data.csrf;
      start();
    } catch (err) {
      error.textContent = err.status === 401 ? 'This token is not known to the backend.' : err.message;
    } finally {
      button.disabled = false;
    }
  });
  setMain(form);
  input.focus();
}

async function logout() {
  try { await api('DELETE', '/v1/session'); } catch (err) { /* already logged out */ }
  state.cameras.clear();
  state.persons.clear();
  showLogin('You are logged out.');
}

// ---------------------------------------------------------------- shared data

async function loadCameras() {
  const list = await api('GET', '/v1/camera');
  state.cameras = new Map(list.map((cam) => [cam.id, cam]));
  return list;
}

function cameraName(camId) {
  const cam = state.cameras.get(camId);
  return cam && cam.meta ? cam.meta : `Camera ${String(camId).slice(0, 8)}`;
}

function person(personId) {
  if (!state.persons.has(personId)) {
    state.persons.set(personId, api('GET', `/v1/person/id/${personId}`).catch(() => null));
  }
  return state.persons.get(personId);
}

function personLabel(meta, personId) {
  return meta ? meta : `Person ${personId}`;
}

function friendBadge(friend) {
  return h('span', { class: `badge ${friend ? 'friend' : 'foe'}` }, friend ? 'Friend' : 'Foe');
}

// ---------------------------------------------------------------- events

function eventCard(ev) {
  const who = h('a', { class: 'person-link' });
  if (ev.person_id === null || ev.person_id === undefined) {
    who.textContent = 'Unknown person';
    who.removeAttribute('href');
  } else {
    who.href = `#/person/${ev.person_id}`;
    who.textContent = personLabel(ev.person_meta, ev.person_id);
    if (ev.person_meta === undefined) {
      person(ev.person_id).then((p) => { if (p) who.textContent = personLabel(p.meta, p.id); });
    }
  }
  const camera = ev.camera_meta !== undefined && ev.camera_meta !== null && ev.camera_meta !== ''
    ? ev.camera_meta : cameraName(ev.cam_id);
  const extra = [];
  if (ev.gender) extra.push(ev.gender);
  if (ev.age !== undefined && ev.age !== null) extra.push(`age ${ev.age}`);
  const card = h('article', { class: `event ${ev.friend ? 'is-friend' : 'is-foe'}`, 'data-id': ev.id },
    ev.photo ? h('a', { href: ev.photo, target: '_blank', rel: 'noopener', class: 'snap-link',
      title: 'Open the full frame' }, img(ev.thumbnail, 'Camera snapshot', 'snap'))
      : img(ev.thumbnail, 'Camera snapshot', 'snap'),
    h('div', { class: 'event-body' },
      img(ev.normalized, 'Face', 'crop'),
      h('div', { class: 'event-text' },
        h('div', { class: 'event-who' }, friendBadge(ev.friend), who),
        h('div', { class: 'event-cam', text: camera }),
        h('time', { datetime: ev.timestamp, text: formatTime(ev.timestamp) }),
        extra.length ? h('div', { class: 'muted small', text: extra.join(', ') }) : null)));
  for (const hook of EVENT_CARD_HOOKS) hook(card, ev);
  return card;
}

function localTime(value) {
  // A datetime-local value is in the browser's zone; the API wants an absolute time.
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

function eventDate(ev) {
  return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(ev.timestamp) ? ev.timestamp : `${ev.timestamp}Z`);
}

function readFilters(form) {
  const data = new FormData(form);
  const f = {};
  if (data.get('cam')) f.cam = String(data.get('cam'));
  const pid = String(data.get('person') || '').trim();
  if (pid) f.person = Number(pid);
  if (data.get('friend')) f.friend = data.get('friend') === 'friend';
  if (data.get('matched')) f.matched = data.get('matched') === 'known';
  if (data.get('watch')) f.watch = String(data.get('watch'));
  const from = localTime(String(data.get('from') || ''));
  const to = localTime(String(data.get('to') || ''));
  if (from) f.from = from;
  if (to) f.to = to;
  return f;
}

// The filters as the history API has them (all applied by the server).
function filterParams(f) {
  const body = {};
  if (f.cam) body.cam_ids = [f.cam];
  if (f.person !== undefined) body.person_id = f.person;
  if (f.friend !== undefined) body.friend = f.friend;
  if (f.matched !== undefined) body.matched = f.matched;
  if (f.watch) body.watchlist = f.watch === 'match';
  if (f.from) body.start = f.from.toISOString();
  if (f.to) body.end = f.to.toISOString();
  return body;
}

function searchBody(f, maxId) {
  const body = { ...filterParams(f), limit: PAGE };
  if (maxId) body.max_id = maxId;
  return body;
}

// GET /v1/history/report.html with the filters and the browser's zone: the browser
// downloads it (Content-Disposition: attachment) with the session cookie.
function reportUrl(f) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(filterParams(f))) {
    q.set(key, Array.isArray(value) ? JSON.stringify(value) : String(value));
  }
  if (ZONE !== 'local time') q.set('tz', ZONE);
  return `/v1/history/report.html?${q}`;
}

function matches(f, ev) {
  if (f.cam && ev.cam_id !== f.cam) return false;
  if (f.person !== undefined && ev.person_id !== f.person) return false;
  if (f.friend !== undefined && ev.friend !== f.friend) return false;
  if (f.matched !== undefined && (ev.person_id !== null && ev.person_id !== undefined) !== f.matched) return false;
  if (f.from && eventDate(ev) < f.from) return false;
  if (f.to && eventDate(ev) > f.to) return false;
  return true;
}

function closeStream() {
  if (state.stream) state.stream.close();
  state.stream = null;
}

function openStream(after, onEvent, status) {
  closeStream();
  const source = new EventSource(`/v1/events/stream?after=${after}`);
  state.stream = source;
  source.onopen = () => status('live');
  let last = after;
  source.onmessage = (msg) => {
    if (msg.lastEventId) last = Number(msg.lastEventId);
    try { onEvent(JSON.parse(msg.data)); } catch (err) { /* one bad message never stops the feed */ }
  };
  source.onerror = async () => {
    if (state.stream !== source) return;
    status('reconnecting');
    if (source.readyState === EventSource.CLOSED) {
      try {
        await api('GET', '/v1/session');
        // EventSource gave up (an error status): start again after the last event we got
        setTimeout(() => { if (state.stream === source) openStream(last, onEvent, status); }, 3000);
      } catch (err) { /* showLogin ran */ }
    }
  };
}

// ---------------------------------------------------------------- CSV export

const CSV_PAGE = 1000;

function csvCell(value) {
  let text = value === null || value === undefined ? '' : String(value);
  // a spreadsheet must not run a cell as a formula
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return `"${text.replace(/"/g, '""')}"`;
}

async function personNames(ids) {
  const names = new Map();
  const queue = [...ids];
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      const p = await person(id);
      names.set(id, p ? p.meta : '');
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  return names;
}

async function exportCsv(filters, progress) {
  const events = [];
  let maxId = null;
  for (;;) {
    const body = { ...searchBody(filters, maxId), limit: CSV_PAGE };
    const data = await api('POST', '/v1/history/search', body);
    events.push(...data.results);
    progress(`Exporting… ${events.length} events`);
    if (!data.next_page || !data.results.length) break;
    maxId = data.results[data.results.length - 1].id;
  }
  const names = await personNames(new Set(events.map((ev) => ev.person_id).filter((id) => id !== null)));
  const header = ['event_id', 'time_utc', `time_${ZONE}`, 'camera_id', 'camera', 'person_id', 'person',
    'friend', 'face_meta', 'face_url', 'snapshot_url'];
  const rows = events.map((ev) => [ev.id, `${eventDate(ev).toISOString()}`, formatTime(ev.timestamp),
    ev.cam_id, cameraName(ev.cam_id), ev.person_id, names.get(ev.person_id) || '',
    ev.friend ? 'friend' : 'foe', ev.meta, ev.normalized, ev.photo]);
  const text = [header, ...rows].map((row) => row.map(csvCell).join(',')).join('\r\n');
  const link = h('a', { href: URL.createObjectURL(new Blob([`\ufeff${text}\r\n`], { type: 'text/csv' })),
    download: `events-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  return events.length;
}

async function viewEvents() {
  const view = setMain();
  const camSelect = h('select', { name: 'cam', 'aria-label': 'Camera' }, h('option', { value: '' }, 'All cameras'));
  const form = h('form', { class: 'filters', id: 'event-filters' },
    h('label', {}, 'Camera', camSelect),
    h('label', {}, 'Person id', h('input', { name: 'person', type: 'number', min: 1, inputmode: 'numeric', placeholder: 'any' })),
    h('label', {}, 'Friend or foe', h('select', { name: 'friend' },
      h('option', { value: '' }, 'Both'), h('option', { value: 'friend' }, 'Friends'),
      h('option', { value: 'foe' }, 'Foes'))),
    h('label', {}, 'Person known', h('select', { name: 'matched' },
      h('option', { value: '' }, 'Known or not'), h('option', { value: 'known' }, 'Known persons'),
      h('option', { value: 'unknown' }, 'Unknown persons'))),
    h('label', {}, 'Watch lists', h('select', { name: 'watch' },
      h('option', { value: '' }, 'All events'), h('option', { value: 'match' }, 'Matches only'),
      h('option', { value: 'none' }, 'No match'))),
    h('label', {}, 'From', h('input', { name: 'from', type: 'datetime-local', step: 1 })),
    h('label', {}, 'To', h('input', { name: 'to', type: 'datetime-local', step: 1 })),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('button', { type: 'reset', class: 'ghost' }, 'Clear'),
      h('button', { type: 'button', class: 'ghost', id: 'export-csv', title: 'Download the filtered history as CSV' }, 'Export CSV'),
      h('a', { class: 'button ghost', id: 'export-report', href: reportUrl({}), download: '',
        title: 'Download the filtered history (newest 1000 events) as one HTML file with the face images' }, 'HTML report')));
  const live = liveBadge();
  const summary = h('p', { class: 'muted small', id: 'event-counts', 'aria-live': 'polite' });
  const list = h('div', { class: 'grid events', id: 'events' });
  const more = h('button', { type: 'button', class: 'ghost more', hidden: true }, 'Load older events');
  main().append(h('div', { class: 'page-head' }, h('h1', {}, 'Events'), live,
    h('span', { class: 'muted small' }, `Times in ${ZONE}`)), form, summary, list, more);

  try {
    for (const cam of await loadCameras()) {
      camSelect.append(h('option', { value: cam.id }, cameraName(cam.id)));
    }
  } catch (err) { reportError(err); }

  let filters = {};
  let oldest = null;
  const shown = new Set();
  const status = live.status;
  const add = (ev, atTop) => {
    if (shown.has(ev.id)) return;
    shown.add(ev.id);
    list.querySelector('.empty')?.remove();
    const card = eventCard(ev);
    if (!atTop) { list.append(card); return; }
    card.classList.add('new');
    list.prepend(card);
    while (list.children.length > MAX_LIVE_CARDS) {
      // the oldest shown cards leave; "Load older events" brings them back from the server
      shown.delete(Number(list.lastElementChild.dataset.id));
      list.lastElementChild.remove();
      oldest = Number(list.lastElementChild.dataset.id);
      more.hidden = false;
    }
  };
  const showEmpty = () => {
    if (shown.size) return;
    const filtered = Object.keys(filters).length > 0;
    list.replaceChildren(filtered
      ? emptyState('No events match these filters', 'Clear the filters to see every event. New matching events appear here as they happen.')
      : emptyState('No camera events yet',
        ['Add a camera on the ', h('a', { href: '#/cameras' }, 'Cameras'), ' page and run fkvideo_detector with its detector name against this backend.'],
        'Faces it posts appear here live, without reloading the page.'));
  };
  // Each reload (filters applied) is one run; answers of an older run are dropped, so fast
  // clicks never mix results of two filter sets.
  let run = 0;
  const current = (mine) => mine === run && view === state.view;
  const loadPage = async (mine = run) => {
    more.disabled = true;
    try {
      const data = await api('POST', '/v1/history/search', searchBody(filters, oldest));
      if (!current(mine)) return;
      for (const ev of data.results) add(ev, false);
      if (data.results.length) oldest = data.results[data.results.length - 1].id;
      more.hidden = !data.next_page;
      showEmpty();
    } catch (err) { reportError(err); } finally { more.disabled = false; }
  };
  // "N events, K alerts" of the whole filtered history (counted by the server); refreshed on
  // each reload and, at most every few seconds, while live events arrive.
  let countTimer = null;
  const showCounts = async (mine = run) => {
    countTimer = null;
    try {
      const c = await api('POST', '/v1/history/counts', filterParams(filters));
      if (!current(mine)) return;
      summary.textContent = `${c.events} event${c.events === 1 ? '' : 's'} match, ${c.alerts} alert${c.alerts === 1 ? '' : 's'}`
        + ` (${c.watchlist} watch-list match${c.watchlist === 1 ? '' : 'es'}, ${c.unknown} unknown face${c.unknown === 1 ? '' : 's'})`;
    } catch (err) { /* the list shows API errors; the summary stays as it was */ }
  };
  const reload = async () => {
    const mine = ++run;
    closeStream();
    filters = readFilters(form);
    oldest = null;
    shown.clear();
    list.replaceChildren();
    more.hidden = true;
    try {
      // The newest event id now, before the filtered page: the stream resumes after it.
      const after = await latestEventId();
      if (!current(mine)) return;
      await loadPage(mine);
      if (!current(mine)) return;
      showCounts(mine);
      openStream(after, async (ev) => {
        if (!matches(filters, ev)) return;
        if (filters.watch && !(await watchPasses(ev.id, filters.watch))) return;
        add(ev, true);
        if (!countTimer) countTimer = setTimeout(() => showCounts(mine), 3000);
      }, status);
    } catch (err) { reportError(err); }
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); reload(); });
  form.addEventListener('reset', () => setTimeout(reload, 0));
  more.addEventListener('click', () => loadPage());
  const reportLink = form.querySelector('#export-report');
  // the link follows the form (the filters as they are now, applied or not)
  const syncReport = () => { reportLink.href = reportUrl(readFilters(form)); };
  form.addEventListener('input', syncReport);
  form.addEventListener('change', syncReport);
  form.addEventListener('reset', () => setTimeout(syncReport, 0));
  const exportButton = form.querySelector('#export-csv');
  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    try {
      const n = await exportCsv(readFilters(form), (text) => { exportButton.textContent = text; });
      showBanner(`Exported ${n} event${n === 1 ? '' : 's'} as CSV.`, 'ok');
    } catch (err) { reportError(err); } finally {
      exportButton.disabled = false;
      exportButton.textContent = 'Export CSV';
    }
  });
  await reload();
}

// ---------------------------------------------------------------- shared by pages
// (the persons pages live in persons.js)

async function latestEventId() {
  const anchor = await api('POST', '/v1/history/search', { limit: 1 });
  return anchor.results.length ? anchor.results[0].id : 0;
}

function liveBadge() {
  const live = h('span', { class: 'live', id: 'live' }, 'Connecting…');
  live.status = (s) => {
    live.className = `live is-${s}`;
    live.textContent = s === 'live' ? 'Live' : 'Reconnecting…';
  };
  return live;
}

// ---------------------------------------------------------------- cameras
// viewCameras and viewCameraRegion live in cameras.js.

// ---------------------------------------------------------------- routing

function route() {
  hideBanner();
  const hash = window.location.hash || '#/events';
  const name = hash.split('/')[1] || 'events';
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.route === name || (name === 'person' && a.dataset.route === 'persons')
      || (name === 'camera' && a.dataset.route === 'cameras'));
  }
  const region = /^#\/camera\/([^/]+)\/region$/.exec(hash);
  if (region) return viewCameraRegion(decodeURIComponent(region[1]));
  if (name === 'cameras') return viewCameras();
  if (PAGES[name]) return PAGES[name](hash);
  return viewEvents();
}

function start() {
  $('#topbar').hidden = false;
  route();
}

async function boot() {
  $('#logout').addEventListener('click', logout);
  window.addEventListener('hashchange', () => { if (state.csrf) route(); });
  try {
    const session = await api('GET', '/v1/session');
    state.csrf = session.csrf;
    start();
  } catch (err) {
    showLogin(err.status === 401 || err.status === undefined ? '' : err.message);
  }
}

document.addEventListener('DOMContentLoaded', boot);
