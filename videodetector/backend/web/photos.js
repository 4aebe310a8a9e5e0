// Photo processing page (#/photos): detect (boxes drawn on the photo, gender/age), verify two
// photos, identify in a gallery. A photo comes from a file or from the browser's camera.
'use strict';

const VERIFY_PRESETS = [['medium', 'Medium (0.66)'], ['default', 'Default (0.75)'], ['strict', 'Strict (0.78)'], ['low', 'Low (0.57)']];

// A photo picker: a file input, plus "Use camera" where the browser has one.
function photoPicker(id, label, onChange) {
  const input = h('input', { type: 'file', accept: 'image/*', id, 'aria-label': label });
  const picker = h('div', { class: 'photo-picker' }, h('label', {}, label, input));
  picker.photo = null; // a File or Blob
  input.addEventListener('change', () => { picker.photo = input.files[0] || null; onChange(picker.photo); });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    const button = h('button', { type: 'button', class: 'ghost' }, 'Use camera');
    button.addEventListener('click', async () => {
      try {
        picker.photo = await cameraShot(picker);
        onChange(picker.photo);
      } catch (err) { showBanner(`The camera is not available: ${err.message || err}`); }
    });
    picker.append(button);
  }
  return picker;
}

async function cameraShot(where) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  const video = h('video', { autoplay: true, playsinline: true, muted: true, class: 'camera-view' });
  video.srcObject = stream;
  const take = h('button', { type: 'button', class: 'primary' }, 'Take photo');
  const box = h('div', { class: 'camera-box' }, video, take);
  where.append(box);
  try {
    await new Promise((resolve) => { take.addEventListener('click', resolve, { once: true }); });
    const canvas = h('canvas', { width: video.videoWidth, height: video.videoHeight });
    canvas.getContext('2d').drawImage(video, 0, 0);
    return await new Promise((resolve) => { canvas.toBlob(resolve, 'image/jpeg', 0.92); });
  } finally {
    for (const track of stream.getTracks()) track.stop();
    box.remove();
  }
}

function photoForm(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value instanceof Blob) form.append(name, value, value.name || `${name}.jpg`);
    else if (value !== undefined && value !== null) form.append(name, String(value));
  }
  return form;
}

// The photo on a canvas with the boxes (x1, y1, x2, y2 in the photo's pixels) and labels.
async function drawBoxes(canvas, photo, boxes) {
  const url = URL.createObjectURL(photo);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(image, 0, 0);
    const line = Math.max(2, Math.round(canvas.width / 300));
    ctx.lineWidth = line;
    ctx.font = `${Math.max(14, line * 7)}px system-ui, sans-serif`;
    boxes.forEach((b, i) => {
      ctx.strokeStyle = '#22c55e';
      ctx.strokeRect(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1);
      const text = b.label || `${i + 1}`;
      const w = ctx.measureText(text).width + 8;
      const hgt = parseInt(ctx.font, 10) + 6;
      ctx.fillStyle = '#22c55e';
      ctx.fillRect(b.x1, Math.max(0, b.y1 - hgt), w, hgt);
      ctx.fillStyle = '#fff';
      ctx.fillText(text, b.x1 + 4, Math.max(0, b.y1 - hgt) + hgt - 6);
    });
  } finally { URL.revokeObjectURL(url); }
}

function faceLabel(face, i) {
  const parts = [`${i + 1}`];
  if (face.gender) parts.push(face.gender);
  if (face.age !== undefined && face.age !== null) parts.push(`${Math.round(face.age)}`);
  return parts.join(' · ');
}

function detectSection() {
  const canvas = h('canvas', { class: 'photo-canvas', id: 'detect-canvas', hidden: true });
  const attrs = h('input', { type: 'checkbox', id: 'detect-gae' });
  const out = h('div', { id: 'detect-result', role: 'status' });
  const picker = photoPicker('detect-photo', 'Photo', () => {});
  const run = h('button', { type: 'submit', class: 'primary' }, 'Detect faces');
  const form = h('form', { class: 'card camera-form', id: 'detect-form' }, h('h2', {}, 'Detect'),
    h('div', { class: 'inline-form' }, picker, h('label', { class: 'check' }, attrs, 'Gender and age'), run),
    out, canvas);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!picker.photo) { out.textContent = 'Choose a photo first.'; return; }
    run.disabled = true;
    out.textContent = 'Detecting…';
    try {
      const data = await apiForm('/v1/detect', photoForm({ photo: picker.photo,
        gender: attrs.checked ? 'true' : undefined, age: attrs.checked ? 'true' : undefined }));
      const boxes = data.faces.map((f, i) => ({ ...f, label: faceLabel(f, i) }));
      await drawBoxes(canvas, picker.photo, boxes);
      canvas.hidden = false;
      out.replaceChildren(h('p', { text: `${data.faces.length} face${data.faces.length === 1 ? '' : 's'} found.` }),
        h('ol', { class: 'face-list' }, data.faces.map((f, i) => h('li', { 'data-index': i },
          `box ${f.x1},${f.y1} – ${f.x2},${f.y2}`,
          f.gender ? ` · ${f.gender}${f.gender_confidence ? ` (${(f.gender_confidence * 100).toFixed(0)}%)` : ''}` : '',
          f.age !== undefined ? ` · age ${Math.round(f.age)}` : ''))));
    } catch (err) {
      canvas.hidden = true;
      out.textContent = err.message;
    } finally { run.disabled = false; }
  });
  return form;
}

function verifySection() {
  const one = photoPicker('verify-photo1', 'First photo', () => {});
  const two = photoPicker('verify-photo2', 'Second photo', () => {});
  const preset = h('select', { id: 'verify-threshold' }, VERIFY_PRESETS.map(([v, t]) => h('option', { value: v }, t)));
  const out = h('div', { id: 'verify-result', role: 'status' });
  const form = h('form', { class: 'card camera-form', id: 'verify-form' }, h('h2', {}, 'Verify: same person?'),
    h('div', { class: 'inline-form' }, one, two, h('label', {}, 'Threshold', preset),
      h('button', { type: 'submit', class: 'primary' }, 'Compare')), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!one.photo || !two.photo) { out.textContent = 'Choose two photos first.'; return; }
    out.textContent = 'Comparing…';
    try {
      const data = await apiForm('/v1/verify', photoForm({ photo1: one.photo, photo2: two.photo,
        threshold: preset.value === 'default' ? undefined : preset.value }));
      const best = data.results.reduce((a, b) => (b.confidence > a.confidence ? b : a), data.results[0]);
      out.replaceChildren(h('p', { class: `verdict ${data.verified ? 'same' : 'different'}` },
        data.verified ? 'The same person' : 'Different persons',
        ` — confidence ${best.confidence.toFixed(3)}`));
    } catch (err) { out.textContent = err.message; }
  });
  return form;
}

function identifySection() {
  const picker = photoPicker('identify-photo', 'Photo', () => {});
  const gallery = h('select', { id: 'identify-gallery' }, h('option', { value: 'default' }, 'default'));
  api('GET', '/v1/galleries').then((data) => {
    for (const name of data.results) if (name !== 'default') gallery.append(h('option', { value: name }, name));
  }).catch(reportError);
  const n = h('input', { type: 'number', min: 1, max: 20, value: 3, id: 'identify-n' });
  const out = h('div', { id: 'identify-result', role: 'status' });
  const form = h('form', { class: 'card camera-form', id: 'identify-form' }, h('h2', {}, 'Identify in a gallery'),
    h('div', { class: 'inline-form' }, picker, h('label', {}, 'Gallery', gallery), h('label', {}, 'Best', n),
      h('button', { type: 'submit', class: 'primary' }, 'Search')), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!picker.photo) { out.textContent = 'Choose a photo first.'; return; }
    out.textContent = 'Searching…';
    try {
      const path = gallery.value === 'default' ? '/v1/identify'
        : `/v1/faces/gallery/${encodeURIComponent(gallery.value)}/identify`;
      const data = await apiForm(path, photoForm({ photo: picker.photo, n: n.value, threshold: 'low' }));
      const hits = Object.values(data.results)[0] || [];
      out.replaceChildren(hits.length ? h('div', { class: 'grid persons' }, hits.map((hit) => h('article', { class: 'card face hit' },
        img(hit.face.normalized || hit.face.thumbnail, `Face ${hit.face.id}`, 'portrait'),
        h('div', { class: 'person-text' }, h('div', { class: 'person-name', text: hit.face.meta || `Face ${hit.face.id}` }),
          h('div', { class: 'muted small', text: `confidence ${hit.confidence.toFixed(3)}` })))))
        : h('p', { text: `No face in ${gallery.value} reaches confidence 0.57 (low).` }));
    } catch (err) { out.textContent = err.message; }
  });
  return form;
}

PAGES.photos = () => {
  setMain(h('div', { class: 'page-head' }, h('h1', {}, 'Photo processing'),
    h('span', { class: 'muted small' }, 'Nothing here is stored: photos are only analysed.')),
  detectSection(), verifySection(), identifySection());
};
