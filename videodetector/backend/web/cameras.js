// Cameras page of the operator console: the camera list with each camera's live health (as its
// detector reports it) and the region editor (ROI / ROT drawn on the camera's current picture).
// A classic script loaded after app.js: it uses app.js's helpers (h, api, state, ...) and
// defines viewCameras / viewCameraRegion, which app.js's router calls.
'use strict';

const HEALTH_POLL_MS = 3000;
const REGION_POLL_MS = 2000;
const STATE_WORDS = {
  starting: 'Starting', running: 'Running', reconnecting: 'Reconnecting', source_down: 'Source down',
  restarting: 'Restarting', ended: 'Ended', failed: 'Failed', stopped: 'Stopped',
};
const STATE_KIND = { running: 'ok', starting: 'warn', reconnecting: 'warn', restarting: 'warn',
  source_down: 'bad', failed: 'bad', ended: 'idle', stopped: 'idle' };

function regionText(value) {
  if (value === null || value === undefined) return '';
  return Array.isArray(value) ? `${value[0]}x${value[1]}+${value[2]}+${value[3]}` : String(value);
}

function parseRegion(text) {
  const m = /^\s*(\d+)x(\d+)\+(\d+)\+(\d+)\s*$/.exec(String(text || ''));
  if (!m) return null;
  const [w, hgt, x, y] = m.slice(1).map(Number);
  return w > 0 && hgt > 0 ? { x, y, w, h: hgt } : null;
}

function agoText(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const fps = (v) => (typeof v === 'number' ? v.toFixed(1) : '—');

// ---------------------------------------------------------------- health

function healthBadge(hl) {
  if (!hl || hl.status === 'none') return h('span', { class: 'badge off health-badge' }, 'No detector');
  if (hl.status === 'stale') return h('span', { class: 'badge off health-badge' }, 'No detector');
  const st = hl.report.state;
  return h('span', { class: `badge state-${STATE_KIND[st] || 'idle'} health-badge` }, STATE_WORDS[st] || st);
}

function healthBlock(hl, fetchedAt, cam) {
  const box = h('div', { class: 'health', 'data-status': hl ? hl.status : 'none' });
  if (!hl || hl.status === 'none') {
    const hint = cam && cam.detector
      ? ['Start ', h('code', {}, `fkvideo_detector -n ${cam.detector}`), ' against this backend.']
      : ['Set a detector name, then start fkvideo_detector with it (', h('code', {}, '-n'), ').'];
    box.append(h('p', { class: 'muted small no-detector' }, 'No detector reports this camera. ', ...hint));
    return box;
  }
  const r = hl.report;
  const since = (Date.now() - fetchedAt) / 1000;
  if (hl.status === 'stale') {
    box.append(h('p', { class: 'muted small no-detector' },
      `No detector: the last report (from ${r.detector}) came ${agoText(hl.age + since)}.`));
    return box;
  }
  const lastFrame = r.last_frame_age === null || r.last_frame_age === undefined
    ? 'none yet' : agoText(r.last_frame_age + hl.age + since);
  const row = (label, value, cls) => h('div', { class: `kv ${cls}` }, h('span', { class: 'muted', text: label }),
    h('span', { class: 'value', text: value }));
  const lastRow = row('Last frame', lastFrame, 'h-last');
  if (r.last_frame_time) lastRow.title = formatTime(new Date(r.last_frame_time * 1000).toISOString());
  box.append(
    row('Detector', `${r.detector}${r.version ? ` (v${r.version})` : ''}`, 'h-detector'),
    row('FPS', `${fps(r.fps_in)} in · ${fps(r.fps_processed)} processed`, 'h-fps'),
    row('Dropped', `${r.frames_dropped} frame${r.frames_dropped === 1 ? '' : 's'}`, 'h-drops'),
    lastRow,
    row('Reconnects', String(r.reconnects), 'h-reconnects'));
  if (r.error) box.append(row('Error', r.error, 'h-error'));
  return box;
}

function previewThumb(cam, hl) {
  const href = `#/camera/${encodeURIComponent(cam.id)}/region`;
  if (hl && hl.preview) {
    const src = `/v1/camera/${encodeURIComponent(cam.id)}/preview.jpg?v=${encodeURIComponent(hl.preview.received)}`;
    return h('a', { class: 'thumb-link', href, title: 'Edit the region on this picture' },
      h('img', { class: 'thumb', src, 'data-v': hl.preview.received, alt: `Current picture of ${cameraName(cam.id)}` }));
  }
  return h('a', { class: 'thumb-link', href }, h('div', { class: 'thumb noimg', text: 'no picture yet' }));
}

// ---------------------------------------------------------------- list

function cameraForm(onSaved) {
  const field = (name, label, hint) => h('label', {}, label,
    h('input', { name, placeholder: hint, autocomplete: 'off' }));
  const error = h('p', { class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add camera');
  const cancel = h('button', { type: 'button', class: 'ghost', hidden: true }, 'Cancel');
  const heading = h('h2', {}, 'Add a camera');
  const form = h('form', { class: 'card camera-form', id: 'camera-form' }, heading,
    h('div', { class: 'form-grid' },
      field('meta', 'Name', 'Entrance'),
      field('url', 'Stream URL', 'rtsp://… or a file path'),
      field('detector', 'Detector name', 'the --detector-name of fkvideo_detector'),
      field('roi', 'Region of interest', 'WxH+X+Y, empty = whole frame'),
      field('rot', 'Region of tracking', 'WxH+X+Y, empty = whole frame'),
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'enabled', checked: true }), 'Enabled')),
    error, h('div', { class: 'form-actions' }, submit, cancel));
  let editing = null;
  const reset = () => {
    editing = null;
    form.reset();
    heading.textContent = 'Add a camera';
    submit.textContent = 'Add camera';
    cancel.hidden = true;
    error.textContent = '';
  };
  cancel.addEventListener('click', reset);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const d = new FormData(form);
    const body = { enabled: d.get('enabled') === 'on' };
    for (const name of ['meta', 'url', 'detector', 'roi', 'rot']) body[name] = String(d.get(name) || '').trim();
    for (const name of ['url', 'detector']) if (!body[name]) body[name] = null;
    error.textContent = '';
    submit.disabled = true;
    try {
      if (editing) await api('PUT', `/v1/camera/${encodeURIComponent(editing)}`, body);
      else await api('POST', '/v1/camera', body);
      showBanner(editing ? 'Camera saved.' : 'Camera added.', 'ok');
      reset();
      onSaved();
    } catch (err) {
      error.textContent = err.message;
    } finally { submit.disabled = false; }
  });
  form.edit = (cam) => {
    editing = cam.id;
    heading.textContent = `Edit ${cameraName(cam.id)}`;
    submit.textContent = 'Save changes';
    cancel.hidden = false;
    for (const name of ['meta', 'url', 'detector']) form.elements[name].value = cam[name] || '';
    form.elements.roi.value = regionText(cam.roi);
    form.elements.rot.value = regionText(cam.rot);
    form.elements.enabled.checked = cam.enabled;
    form.scrollIntoView({ behavior: 'smooth', block: 'start' });
    form.elements.meta.focus();
  };
  return form;
}

function cameraCard(cam, form, refresh, hl, fetchedAt) {
  const toggle = h('button', { type: 'button', class: 'ghost' }, cam.enabled ? 'Disable' : 'Enable');
  toggle.addEventListener('click', async () => {
    try {
      await api('PUT', `/v1/camera/${encodeURIComponent(cam.id)}`, { enabled: !cam.enabled });
      refresh();
    } catch (err) { reportError(err); }
  });
  const edit = h('button', { type: 'button', class: 'ghost', onclick: () => form.edit(cam) }, 'Edit');
  const region = h('a', { class: 'button ghost', href: `#/camera/${encodeURIComponent(cam.id)}/region` }, 'Edit region');
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete');
  del.addEventListener('click', async () => {
    if (!window.confirm(`Delete the camera "${cameraName(cam.id)}"? Its past events stay in the history.`)) return;
    try {
      await api('DELETE', `/v1/camera/${encodeURIComponent(cam.id)}`);
      showBanner('Camera deleted.', 'ok');
      refresh();
    } catch (err) { reportError(err); }
  });
  const row = (label, value) => h('div', { class: 'kv' }, h('span', { class: 'muted', text: label }),
    h('span', { class: 'value', text: value || '—' }));
  return h('article', { class: `card camera ${cam.enabled ? '' : 'disabled'}`, 'data-id': cam.id },
    h('div', { class: 'camera-head' }, h('h3', { text: cameraName(cam.id) }),
      h('span', { class: 'badges' }, healthBadge(hl),
        h('span', { class: `badge ${cam.enabled ? 'on' : 'off'} enabled-badge` }, cam.enabled ? 'Enabled' : 'Disabled'))),
    h('div', { class: 'camera-body' }, previewThumb(cam, hl),
      h('div', { class: 'camera-info' }, healthBlock(hl, fetchedAt, cam))),
    row('Stream', cam.url), row('Detector', cam.detector),
    row('ROI', regionText(cam.roi)), row('ROT', regionText(cam.rot)),
    row('Id', cam.id),
    h('div', { class: 'camera-actions' }, edit, region, toggle, del));
}

function updateHealth(list, healthById, fetchedAt) {
  for (const card of list.querySelectorAll('.camera[data-id]')) {
    const cam = state.cameras.get(card.dataset.id);
    const hl = healthById.get(card.dataset.id);
    if (!cam) continue;
    card.querySelector('.health').replaceWith(healthBlock(hl, fetchedAt, cam));
    card.querySelector('.health-badge').replaceWith(healthBadge(hl));
    const thumb = card.querySelector('.thumb-link');
    const img = thumb.querySelector('img');
    const want = hl && hl.preview ? hl.preview.received : null;
    if ((img ? img.dataset.v : null) !== want) thumb.replaceWith(previewThumb(cam, hl));
  }
}

async function loadHealth() {
  const list = await api('GET', '/v1/cameras/health');
  return new Map(list.map((hl) => [hl.cam_id, hl]));
}

async function viewCameras() {
  const view = setMain();
  const list = h('div', { class: 'grid cameras', id: 'cameras' });
  const refresh = async () => {
    try {
      const [cams, health] = await Promise.all([loadCameras(), loadHealth()]);
      if (view !== state.view) return;
      const at = Date.now();
      list.replaceChildren(...cams.map((cam) => cameraCard(cam, form, refresh, health.get(cam.id), at)));
      if (!cams.length) {
        list.replaceChildren(emptyState('No cameras yet',
          'Add one with the form: a name, the stream URL, and the detector name that fkvideo_detector runs with (--detector-name).',
          'The detector picks up enabled cameras within its poll interval and reports their health here.'));
      }
    } catch (err) { reportError(err); }
  };
  const form = cameraForm(refresh);
  main().append(h('div', { class: 'page-head' }, h('h1', {}, 'Cameras'),
    h('span', { class: 'live is-live', title: `health refreshed every ${HEALTH_POLL_MS / 1000} s` }, 'live health')),
  form, list);
  await refresh();
  const poll = async () => {
    if (view !== state.view) return;
    try {
      const health = await loadHealth();
      if (view !== state.view) return;
      updateHealth(list, health, Date.now());
    } catch (err) { if (!(err instanceof ApiError && err.status === 401)) reportError(err); }
    if (view === state.view) window.setTimeout(poll, HEALTH_POLL_MS);
  };
  window.setTimeout(poll, HEALTH_POLL_MS);
}

// ---------------------------------------------------------------- region editor

const HANDLES = ['nw', 'n', 'ne', 'e', 'se', 's', 'sw', 'w'];

function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

// The rectangle in frame pixels that a drag ``mode`` makes from the one it started with.
function dragRect(mode, start, orig, p, frame) {
  if (mode === 'draw') {
    const x1 = Math.min(start.x, p.x); const y1 = Math.min(start.y, p.y);
    return { x: x1, y: y1, w: Math.abs(p.x - start.x), h: Math.abs(p.y - start.y) };
  }
  if (mode === 'move') {
    return { x: clamp(orig.x + p.x - start.x, 0, frame.w - orig.w),
      y: clamp(orig.y + p.y - start.y, 0, frame.h - orig.h), w: orig.w, h: orig.h };
  }
  let [x1, y1, x2, y2] = [orig.x, orig.y, orig.x + orig.w, orig.y + orig.h];
  if (mode.includes('w')) x1 = p.x;
  if (mode.includes('e')) x2 = p.x;
  if (mode.includes('n')) y1 = p.y;
  if (mode.includes('s')) y2 = p.y;
  return { x: Math.min(x1, x2), y: Math.min(y1, y2), w: Math.abs(x2 - x1), h: Math.abs(y2 - y1) };
}

function roundRect(r) {
  const x = Math.round(r.x); const y = Math.round(r.y);
  return { x, y, w: Math.round(r.x + r.w) - x, h: Math.round(r.y + r.h) - y };
}

function regionBox(kind) {
  return h('div', { class: `region region-${kind}`, 'data-kind': kind, hidden: true },
    h('span', { class: 'region-label', text: kind.toUpperCase() }),
    HANDLES.map((d) => h('span', { class: `handle handle-${d}`, 'data-handle': d })));
}

function regionEditor(cam, onSaved) {
  const regions = { roi: parseRegion(regionText(cam.roi)), rot: parseRegion(regionText(cam.rot)) };
  const frame = { w: 0, h: 0 };
  const image = h('img', { class: 'stage-img', alt: `Current picture of ${cameraName(cam.id)}`, draggable: 'false' });
  const boxes = { roi: regionBox('roi'), rot: regionBox('rot') };
  const stage = h('div', { class: 'stage', id: 'region-stage', hidden: true }, image, boxes.rot, boxes.roi);
  const inputs = {
    roi: h('input', { name: 'roi', autocomplete: 'off', placeholder: 'whole frame', value: regionText(cam.roi) }),
    rot: h('input', { name: 'rot', autocomplete: 'off', placeholder: 'whole frame', value: regionText(cam.rot) }),
  };
  let active = 'roi';
  const pickers = {};
  const pick = (kind) => {
    active = kind;
    for (const [k, b] of Object.entries(pickers)) b.setAttribute('aria-pressed', String(k === kind));
    stage.dataset.active = kind;
  };
  for (const kind of ['roi', 'rot']) {
    pickers[kind] = h('button', { type: 'button', class: `ghost picker picker-${kind}`, onclick: () => pick(kind) },
      kind === 'roi' ? 'Draw ROI' : 'Draw ROT');
  }
  const draw = () => {
    for (const kind of ['roi', 'rot']) {
      const r = regions[kind];
      const box = boxes[kind];
      box.hidden = !r || !frame.w;
      if (box.hidden) continue;
      box.style.left = `${(100 * r.x) / frame.w}%`;
      box.style.top = `${(100 * r.y) / frame.h}%`;
      box.style.width = `${(100 * r.w) / frame.w}%`;
      box.style.height = `${(100 * r.h) / frame.h}%`;
    }
  };
  const setRegion = (kind, r, fromInput) => {
    regions[kind] = r;
    if (!fromInput) inputs[kind].value = r ? `${r.w}x${r.h}+${r.x}+${r.y}` : '';
    draw();
  };
  for (const kind of ['roi', 'rot']) {
    inputs[kind].addEventListener('input', () => {
      const text = inputs[kind].value.trim();
      const r = parseRegion(text);
      inputs[kind].setAttribute('aria-invalid', String(Boolean(text) && !r));
      if (r || !text) setRegion(kind, r, true);
    });
  }
  // pointer events: mouse, pen and touch alike
  let drag = null;
  const framePoint = (ev) => {
    const b = image.getBoundingClientRect();
    return { x: clamp(((ev.clientX - b.left) * frame.w) / b.width, 0, frame.w),
      y: clamp(((ev.clientY - b.top) * frame.h) / b.height, 0, frame.h) };
  };
  stage.addEventListener('pointerdown', (ev) => {
    if (!frame.w || ev.button > 0) return;
    // a handle resizes its region; the chosen region moves when dragged by its middle;
    // anywhere else (also inside the other region: an ROI inside the ROT) draws the chosen one
    const handle = ev.target.closest('.handle');
    const box = ev.target.closest('.region');
    let kind = active;
    let mode = 'draw';
    if (handle) { kind = box.dataset.kind; mode = handle.dataset.handle; }
    else if (box && box.dataset.kind === active) mode = 'move';
    pick(kind);
    drag = { mode, kind, start: framePoint(ev), orig: regions[kind] };
    stage.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });
  stage.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const r = roundRect(dragRect(drag.mode, drag.start, drag.orig, framePoint(ev), frame));
    if (r.w >= 1 && r.h >= 1) setRegion(drag.kind, r);
  });
  const end = () => {
    if (drag && drag.mode === 'draw' && regions[drag.kind] && (regions[drag.kind].w < 4 || regions[drag.kind].h < 4)) {
      setRegion(drag.kind, drag.orig); // a click, not a drag: keep what was there
    }
    drag = null;
  };
  stage.addEventListener('pointerup', end);
  stage.addEventListener('pointercancel', end);

  const error = h('p', { class: 'form-error', role: 'alert', id: 'region-error' });
  const save = h('button', { type: 'submit', class: 'primary' }, 'Save region');
  const form = h('form', { class: 'card region-panel', id: 'region-form' },
    h('div', { class: 'pickers' }, pickers.roi, pickers.rot),
    h('label', {}, h('span', {}, h('span', { class: 'swatch roi' }), 'Region of interest (ROI): only faces whose centre is inside are posted'), inputs.roi,
      h('button', { type: 'button', class: 'ghost small', onclick: () => setRegion('roi', null) }, 'Whole frame')),
    h('label', {}, h('span', {}, h('span', { class: 'swatch rot' }), 'Region of tracking (ROT): only this part of the frame is searched for faces'), inputs.rot,
      h('button', { type: 'button', class: 'ghost small', onclick: () => setRegion('rot', null) }, 'Whole frame')),
    h('p', { class: 'muted small' }, 'Drag on the picture to draw the chosen region, drag it by its middle to move it, by its corners and edges to resize it. Sizes are WxH+X+Y in frame pixels.'),
    error, h('div', { class: 'form-actions' }, save,
      h('a', { class: 'button ghost', href: '#/cameras' }, 'Back to cameras')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    save.disabled = true;
    try {
      const saved = await api('PUT', `/v1/camera/${encodeURIComponent(cam.id)}`,
        { roi: inputs.roi.value.trim(), rot: inputs.rot.value.trim() });
      state.cameras.set(saved.id, saved);
      showBanner('Region saved. The detector restarts the camera with it at its next poll.', 'ok');
      onSaved(saved);
    } catch (err) {
      error.textContent = err.message;
    } finally { save.disabled = false; }
  });
  pick('roi');
  return {
    stage, form, image,
    setFrame(width, height) { frame.w = width; frame.h = height; stage.hidden = false; draw(); },
  };
}

// Why a camera that a detector runs has no picture: no frame came from its stream yet (the
// stream is down: the detector's words for it). null while frames flow (a picture is on its way).
function noFrameText(r) {
  if (!r || r.last_frame_time) return null;
  const words = STATE_WORDS[r.state] || r.state;
  return `The detector ${r.detector} runs this camera but has had no frame from its stream yet `
    + `(${words}${r.error ? `: ${r.error}` : ''}). Check the stream URL and that the camera can be `
    + 'reached from the detector\u2019s host; the picture comes with the first frame.';
}

async function viewCameraRegion(camId) {
  const view = setMain();
  let cam;
  try {
    await loadCameras();
    cam = await api('GET', `/v1/camera/${encodeURIComponent(camId)}`);
  } catch (err) {
    if (view === state.view) main().append(emptyState('Camera not found', err.message));
    return;
  }
  if (view !== state.view) return;
  const editor = regionEditor(cam, () => {});
  const status = h('p', { class: 'muted small', id: 'picture-status' }, 'Asking the detector for a current picture…');
  const empty = emptyState('No picture of this camera yet',
    `The picture comes from the detector that runs this camera (detector name: ${cam.detector || 'not set'}). `
    + 'Start fkvideo_detector with that --detector-name against this backend; it sends a picture within a few seconds.',
    'You can type the regions as WxH+X+Y meanwhile.');
  main().append(h('div', { class: 'page-head' }, h('h1', {}, `Region of ${cameraName(cam.id)}`), status),
    h('div', { class: 'region-layout' }, h('div', { class: 'stage-wrap' }, editor.stage, empty), editor.form));
  let shown = null;
  const showPicture = (hl) => {
    const p = hl.preview;
    if (!p) return;
    empty.hidden = true;
    if (shown !== p.received) {
      shown = p.received;
      editor.image.addEventListener('load', () => editor.setFrame(p.frame_width, p.frame_height), { once: true });
      editor.image.src = `/v1/camera/${encodeURIComponent(cam.id)}/preview.jpg?v=${encodeURIComponent(p.received)}`;
    }
    const who = hl.status === 'ok' ? `from ${hl.report.detector}` : '(no detector reports now)';
    status.textContent = `Picture ${who}, ${agoText(p.age)} · frame ${p.frame_width}x${p.frame_height}`;
  };
  try {
    await api('POST', `/v1/camera/${encodeURIComponent(cam.id)}/preview/request`);
  } catch (err) { reportError(err); }
  const poll = async () => {
    if (view !== state.view) return;
    try {
      const hl = await api('GET', `/v1/camera/${encodeURIComponent(cam.id)}/health`);
      if (view !== state.view) return;
      if (hl.preview) showPicture(hl);
      else {
        status.textContent = hl.status === 'ok' ? 'Waiting for the detector\u2019s picture…' : 'No detector reports this camera.';
        const why = hl.status === 'ok' ? noFrameText(hl.report) : null;
        if (why) empty.querySelector('p').textContent = why;
      }
    } catch (err) { if (!(err instanceof ApiError && err.status === 401)) reportError(err); }
    if (view === state.view) window.setTimeout(poll, REGION_POLL_MS);
  };
  await poll();
}
