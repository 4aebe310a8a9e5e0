// Galleries and faces page (#/galleries, #/galleries/<name>): a classic script loaded after
// app.js; it uses app.js's helpers (h, api, setMain, ...) and registers itself in PAGES.
'use strict';

const BATCH_CHUNK = 6; // photos per POST /v1/faces/batch
const BATCH_RETRIES = 3; // attempts per chunk (same idempotency keys: nothing is stored twice)
const IMAGE_NAME = /\.(jpe?g|png|bmp|webp|gif|tiff?)$/i;

// ---------------------------------------------------------------- multipart API call

async function apiForm(path, form) {
  let response;
  try {
    response = await fetch(path, { method: 'POST', credentials: 'same-origin',
      headers: { 'X-CSRF-Token': state.csrf || '' }, body: form });
  } catch (err) {
    throw new ApiError('Cannot reach the backend. Is fkvideo_backend running?', 0);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
  if (response.status === 401) {
    showLogin('Your session has ended. Log in again.');
    throw new ApiError('Not logged in.', 401);
  }
  if (!response.ok) throw new ApiError(describe(response.status, data), response.status);
  return data;
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------- gallery settings

async function gallerySettings() {
  try {
    const data = await api('GET', '/v1/watchlists');
    return new Map(data.results.map((s) => [s.gallery, s]));
  } catch (err) {
    if (err.status === 404 || err.status === 405) return new Map();
    throw err;
  }
}

// ---------------------------------------------------------------- gallery list

function galleryCard(name, settings, refresh) {
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete');
  del.addEventListener('click', async () => {
    if (!window.confirm(`Delete the gallery "${name}" and all faces in it?`)) return;
    try {
      await api('DELETE', `/v1/galleries/${encodeURIComponent(name)}`);
      showBanner(`Gallery ${name} deleted.`, 'ok');
      refresh();
    } catch (err) { reportError(err); }
  });
  const watch = settings && settings.watchlist;
  const card = h('article', { class: `card gallery${watch ? ' is-watch' : ''}`, 'data-name': name },
    h('div', { class: 'camera-head' }, h('h3', {}, h('a', { href: `#/galleries/${encodeURIComponent(name)}` }, name)),
      watch ? h('span', { class: 'badge watch', text: `Watch list · ${settings.threshold}` }) : null),
    h('p', { class: 'muted small', text: name === 'default' ? 'Every face of this token is in default.' : ' ' }),
    h('div', { class: 'camera-actions' },
      h('a', { class: 'button ghost', href: `#/galleries/${encodeURIComponent(name)}` }, 'Open'),
      name === 'default' ? null : del));
  if (watch) card.style.borderLeftColor = settings.color; // CSSOM: allowed by the CSP
  return card;
}

async function viewGalleries() {
  const view = setMain();
  const list = h('div', { class: 'grid cameras', id: 'galleries' });
  const input = h('input', { name: 'name', placeholder: 'staff, visitors, …', pattern: '[a-zA-Z0-9_\\-]{1,48}',
    required: true, 'aria-label': 'Gallery name', maxlength: 48 });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'card camera-form', id: 'gallery-form' }, h('h2', {}, 'Create a gallery'),
    h('div', { class: 'inline-form' }, input, h('button', { type: 'submit', class: 'primary' }, 'Create')),
    h('p', { class: 'muted small' }, 'Letters, digits, - and _; up to 48 characters.'), error);
  const refresh = async () => {
    try {
      const [data, settings] = await Promise.all([api('GET', '/v1/galleries'), gallerySettings()]);
      if (view !== state.view) return;
      list.replaceChildren(...data.results.map((name) => galleryCard(name, settings.get(name), refresh)));
    } catch (err) { reportError(err); }
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      await api('POST', `/v1/galleries/${encodeURIComponent(input.value.trim())}`);
      showBanner(`Gallery ${input.value.trim()} created.`, 'ok');
      form.reset();
      refresh();
    } catch (err) { error.textContent = err.message; }
  });
  main().append(h('div', { class: 'page-head' }, h('h1', {}, 'Galleries'),
    h('span', { class: 'muted small' }, 'Faces you enroll are searched by identify and matched against camera events.')),
  form, list, typeof unknownAlertsSection === 'function' ? unknownAlertsSection() : '');
  await refresh();
}

// ---------------------------------------------------------------- faces of one gallery

function faceCard(face, onDelete) {
  const del = h('button', { type: 'button', class: 'danger small-button', title: 'Delete this face' }, 'Delete');
  del.addEventListener('click', () => onDelete(face, card));
  const extra = [];
  if (face.person_id !== null && face.person_id !== undefined) extra.push(h('a', { href: `#/person/${face.person_id}` }, `Person ${face.person_id}`));
  if (face.galleries && face.galleries.length) extra.push(h('span', { class: 'muted small', text: face.galleries.join(', ') }));
  const card = h('article', { class: 'card face', 'data-id': face.id },
    img(face.normalized || face.thumbnail, `Face ${face.id}`, 'portrait'),
    h('div', { class: 'person-text' },
      h('div', { class: 'person-name face-meta', text: face.meta || '(no meta)' }),
      h('div', { class: 'muted small', text: `Face ${face.id} · ${formatTime(face.timestamp)}` }),
      h('div', { class: 'person-badges' }, extra), del));
  return card;
}

function metaFromName(file, prefix, postfix) {
  const path = file.webkitRelativePath || file.name;
  const base = path.split('/').pop().replace(/\.[^.]*$/, '');
  return `${prefix}${base}${postfix}`;
}

function uploadForm(gallery, onStored) {
  const files = h('input', { type: 'file', name: 'files', multiple: true, accept: 'image/*', id: 'batch-files' });
  const folder = h('input', { type: 'file', name: 'folder', multiple: true, webkitdirectory: true, id: 'batch-folder' });
  const prefix = h('input', { name: 'prefix', placeholder: 'prefix', 'aria-label': 'Meta prefix', id: 'batch-prefix' });
  const postfix = h('input', { name: 'postfix', placeholder: 'postfix', 'aria-label': 'Meta postfix', id: 'batch-postfix' });
  const mf = h('select', { name: 'mf_selector', id: 'batch-mf' },
    h('option', { value: 'biggest' }, 'Biggest face of each photo'),
    h('option', { value: 'all' }, 'All faces of each photo'),
    h('option', { value: 'reject' }, 'Reject photos with several faces'));
  const submit = h('button', { type: 'submit', class: 'primary', id: 'batch-start' }, 'Upload');
  const progress = h('progress', { max: 1, value: 0, hidden: true, id: 'batch-progress' });
  const summary = h('p', { class: 'muted', id: 'batch-summary', role: 'status' });
  const results = h('table', { class: 'results', id: 'batch-results', hidden: true },
    h('thead', {}, h('tr', {}, h('th', {}, 'File'), h('th', {}, 'Meta'), h('th', {}, 'Result'))), h('tbody'));
  const form = h('form', { class: 'card camera-form', id: 'batch-form' },
    h('h2', {}, `Add faces to ${gallery}`),
    h('div', { class: 'form-grid' },
      h('label', {}, 'Photos', files), h('label', {}, 'or a folder', folder),
      h('label', {}, 'Meta prefix', prefix), h('label', {}, 'Meta postfix', postfix),
      h('label', {}, 'Several faces on a photo', mf)),
    h('p', { class: 'muted small' }, 'Each face gets the file name without its extension as meta, between the prefix and the postfix.'),
    h('div', { class: 'form-actions' }, submit, progress), summary, results);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const chosen = [...files.files, ...folder.files].filter((f) => IMAGE_NAME.test(f.name) || f.type.startsWith('image/'));
    if (!chosen.length) { summary.textContent = 'Choose photos or a folder with photos first.'; return; }
    submit.disabled = true;
    try {
      await batchUpload(gallery, chosen, { prefix: prefix.value, postfix: postfix.value, mf: mf.value },
        { progress, summary, body: results.tBodies[0], table: results });
      onStored();
    } finally { submit.disabled = false; }
  });
  return form;
}

async function sendChunk(gallery, chunk, mf) {
  const form = new FormData();
  const items = chunk.map((job, i) => ({ id: job.index, photo: `multipart:f${i}`, meta: job.meta,
    galleries: gallery === 'default' ? [] : [gallery], mf_selector: mf, idempotency_key: job.key }));
  form.append('items', JSON.stringify(items));
  chunk.forEach((job, i) => form.append(`f${i}`, job.file, job.file.name));
  let last;
  for (let attempt = 0; attempt < BATCH_RETRIES; attempt += 1) {
    try {
      return await apiForm('/v1/faces/batch', form);
    } catch (err) {
      last = err;
      // a 4xx other than 408/429 will not get better by trying again
      if (err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) break;
      await new Promise((resolve) => { setTimeout(resolve, 1000 * 2 ** attempt); });
    }
  }
  throw last;
}

function resultText(result) {
  if (result.status === 'success') {
    const n = result.face_ids.length;
    return `stored ${n} face${n === 1 ? '' : 's'}${result.replayed ? ' (sent again, kept once)' : ''}`;
  }
  return result.reason;
}

async function batchUpload(gallery, chosen, options, ui) {
  const run = randomKey();
  const jobs = chosen.map((file, index) => ({ file, index, meta: metaFromName(file, options.prefix, options.postfix),
    key: `console-${run}-${index}` }));
  ui.body.replaceChildren();
  ui.table.hidden = false;
  ui.progress.hidden = false;
  ui.progress.max = jobs.length;
  ui.progress.value = 0;
  const rows = jobs.map((job) => {
    const status = h('td', { class: 'muted', text: 'waiting' });
    const row = h('tr', { 'data-index': job.index }, h('td', { text: job.file.webkitRelativePath || job.file.name }),
      h('td', { text: job.meta }), status);
    ui.body.append(row);
    return { row, status };
  });
  let ok = 0;
  let failed = 0;
  for (let start = 0; start < jobs.length; start += BATCH_CHUNK) {
    const chunk = jobs.slice(start, start + BATCH_CHUNK);
    ui.summary.textContent = `Uploading ${start + 1}–${start + chunk.length} of ${jobs.length}…`;
    let answer = null;
    let error = null;
    try { answer = await sendChunk(gallery, chunk, options.mf); } catch (err) { error = err; }
    chunk.forEach((job, i) => {
      const result = answer ? answer.results[i] : { status: 'fail', reason: error.message };
      const cell = rows[job.index];
      cell.status.textContent = resultText(result);
      cell.status.className = result.status === 'success' ? 'ok' : 'fail';
      cell.row.className = result.status === 'success' ? 'is-ok' : 'is-fail';
      if (result.status === 'success') ok += 1; else failed += 1;
    });
    ui.progress.value = start + chunk.length;
  }
  ui.summary.textContent = `Done: ${ok} stored, ${failed} failed, of ${jobs.length} files.`;
}

function singleFaceForm(gallery, onStored) {
  const file = h('input', { type: 'file', name: 'photo', accept: 'image/*', required: true });
  const meta = h('input', { name: 'meta', placeholder: 'Name or id', maxlength: 1000 });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'inline-form', id: 'face-form' },
    h('label', {}, 'One photo', file), h('label', {}, 'Meta', meta),
    h('button', { type: 'submit', class: 'primary' }, 'Add face'), error);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const body = new FormData();
    body.append('photo', file.files[0]);
    body.append('meta', meta.value);
    body.append('mf_selector', 'biggest');
    if (gallery !== 'default') body.append('galleries', gallery);
    try {
      await apiForm('/v1/face', body);
      form.reset();
      showBanner('Face added.', 'ok');
      onStored();
    } catch (err) { error.textContent = err.message; }
  });
  return form;
}

async function viewGallery(gallery) {
  const view = setMain();
  const grid = h('div', { class: 'grid persons', id: 'faces' });
  const more = h('button', { type: 'button', class: 'ghost more', hidden: true }, 'Load more faces');
  const count = h('span', { class: 'muted small' });
  let next = null;
  const onDelete = async (face, card) => {
    if (!window.confirm(`Delete face ${face.id}${face.meta ? ` (${face.meta})` : ''}?`)) return;
    try {
      await api('DELETE', `/v1/face/id/${face.id}`);
      card.remove();
      showBanner('Face deleted.', 'ok');
    } catch (err) { reportError(err); }
  };
  const load = async (first) => {
    more.disabled = true;
    try {
      const data = await api('GET', first ? `/v1/faces/gallery/${encodeURIComponent(gallery)}?limit=${PAGE}` : next);
      if (view !== state.view) return;
      if (first) grid.replaceChildren();
      grid.append(...data.results.map((f) => faceCard(f, onDelete)));
      next = data.next_page;
      more.hidden = !next;
      count.textContent = `${grid.querySelectorAll('.face').length} shown${next ? ', more below' : ''}`;
      if (!grid.children.length) {
        grid.replaceChildren(emptyState('No faces in this gallery yet',
          'Add one photo, or upload many at once (a folder works too): each file name becomes the face\u2019s meta.'));
      }
    } catch (err) { reportError(err); } finally { more.disabled = false; }
  };
  more.addEventListener('click', () => load(false));
  const reload = () => load(true);
  main().append(...[h('p', {}, h('a', { href: '#/galleries' }, '← All galleries')),
    h('div', { class: 'page-head' }, h('h1', { text: `Gallery ${gallery}` }), count),
    watchListForm(gallery),
    uploadForm(gallery, reload), h('section', { class: 'card camera-form' }, h('h2', {}, 'Add one face'), singleFaceForm(gallery, reload)),
    h('h2', { id: 'faces-title' }, 'Faces'), grid, more].filter(Boolean));
  await load(true);
}

// The watch-list settings of a gallery (filled in by watchlists.js when it is loaded).
function watchListForm(gallery) {
  return typeof watchListSettingsForm === 'function' ? watchListSettingsForm(gallery) : null;
}

PAGES.galleries = (hash) => {
  const match = /^#\/galleries\/([^/]+)$/.exec(hash);
  return match ? viewGallery(decodeURIComponent(match[1])) : viewGalleries();
};
