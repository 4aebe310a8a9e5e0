// Webhooks page (#/webhooks): add, enable / disable, delete; delivery state of each.
'use strict';

const MATCH_TEXT = { all: 'Every event', watchlist: 'Only watch-list matches', unknown: 'Only events matching no watch list' };

function webhookForm(onSaved) {
  const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://example.com/hook', id: 'hook-url' });
  const secret = h('input', { name: 'secret', type: 'password', autocomplete: 'off', placeholder: 'optional', id: 'hook-secret' });
  const cams = h('select', { name: 'cam_ids', multiple: true, id: 'hook-cams', size: 3 });
  for (const cam of state.cameras.values()) cams.append(h('option', { value: cam.id }, cameraName(cam.id)));
  const match = h('select', { name: 'match', id: 'hook-match' },
    Object.entries(MATCH_TEXT).map(([value, text]) => h('option', { value }, text)));
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'card camera-form', id: 'hook-form' }, h('h2', {}, 'Add a webhook'),
    h('div', { class: 'form-grid' }, h('label', {}, 'URL', url), h('label', {}, 'HMAC secret', secret),
      h('label', {}, 'Cameras (none selected: all)', cams), h('label', {}, 'Events', match)),
    h('p', { class: 'muted small' }, 'Each new camera event is POSTed as JSON with X-Event-Id (de-duplicate by it: delivery is at least once) and, with a secret, X-Signature: sha256=<HMAC of the body>. Failed deliveries are retried with growing pauses.'),
    error, h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add webhook')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const body = { url: url.value.trim(), match: match.value,
      cam_ids: [...cams.selectedOptions].map((o) => o.value) };
    if (secret.value) body.secret = secret.value;
    try {
      await api('POST', '/v1/webhooks', body);
      form.reset();
      showBanner('Webhook added: it gets the events from now on.', 'ok');
      onSaved();
    } catch (err) { error.textContent = err.message; }
  });
  return form;
}

function webhookCard(hook, refresh) {
  const toggle = h('button', { type: 'button', class: 'ghost' }, hook.enabled ? 'Disable' : 'Enable');
  toggle.addEventListener('click', async () => {
    try { await api('PUT', `/v1/webhooks/${hook.id}`, { enabled: !hook.enabled }); refresh(); } catch (err) { reportError(err); }
  });
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete');
  del.addEventListener('click', async () => {
    if (!window.confirm(`Delete the webhook to ${hook.url}?`)) return;
    try { await api('DELETE', `/v1/webhooks/${hook.id}`); refresh(); } catch (err) { reportError(err); }
  });
  const row = (label, value) => h('div', { class: 'kv' }, h('span', { class: 'muted', text: label }),
    h('span', { class: 'value', text: value || '—' }));
  const failing = hook.failures > 0;
  const badge = !hook.enabled ? ['off', 'Disabled'] : failing ? ['foe', `Failing (${hook.failures})`] : ['on', 'Delivering'];
  return h('article', { class: `card camera ${hook.enabled ? '' : 'disabled'}`, 'data-id': hook.id },
    h('div', { class: 'camera-head' }, h('h3', { text: hook.url }), h('span', { class: `badge ${badge[0]}` }, badge[1])),
    row('Events', MATCH_TEXT[hook.match]),
    row('Cameras', hook.cam_ids.length ? hook.cam_ids.map(cameraName).join(', ') : 'all'),
    row('Signed', hook.has_secret ? 'yes (X-Signature)' : 'no'),
    row('Delivered', `${hook.delivered} (up to event ${hook.cursor})`),
    failing ? row('Last error', hook.last_error) : null,
    failing && hook.next_try ? row('Next try', formatTime(new Date(hook.next_try * 1000).toISOString())) : null,
    h('div', { class: 'camera-actions' }, toggle, del));
}

async function viewWebhooks() {
  const view = setMain();
  try { await loadCameras(); } catch (err) { reportError(err); }
  const list = h('div', { class: 'grid cameras', id: 'webhooks' });
  const refresh = async () => {
    try {
      const data = await api('GET', '/v1/webhooks');
      if (view !== state.view) return;
      list.replaceChildren(...data.results.map((hook) => webhookCard(hook, refresh)));
      if (!data.results.length) {
        list.replaceChildren(emptyState('No webhooks yet',
          'Add the URL of a service that should hear about new camera events: a chat bot, an alarm system, your own script.'));
      }
    } catch (err) { reportError(err); }
  };
  main().append(h('div', { class: 'page-head' }, h('h1', {}, 'Webhooks'),
    h('span', { class: 'muted small' }, 'Delivery state refreshes every 5 s.')), webhookForm(refresh), list);
  await refresh();
  const timer = setInterval(() => { if (view !== state.view) clearInterval(timer); else refresh(); }, 5000);
}

PAGES.webhooks = viewWebhooks;
