// Persons pages (#/persons, #/person/<id>): a classic script loaded after app.js; it uses
// app.js's helpers (h, api, setMain, eventCard, ...) and registers itself in PAGES.
// The grid needs one request per page of persons: GET /v1/persons carries each person's
// best face, sightings, first / last seen, cameras and friend-or-foe.
'use strict';

const PERSON_PAGE = 24;
const PICKER_PAGE = 100; // persons per request when a picker loads its list
const PICKER_MAX_PAGES = 10; // a picker searches the newest 1000 persons (or takes an id)
const PICKER_SHOWN = 6;
const SHORT_TIME = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});

function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

function shortTime(ts) {
  if (!ts) return '';
  const date = eventDate({ timestamp: ts });
  return Number.isNaN(date.getTime()) ? ts : SHORT_TIME.format(date);
}

function timeRange(a, b) {
  const [x, y] = [shortTime(a), shortTime(b)];
  if (x === y) return x;
  const day = (ts) => eventDate({ timestamp: ts }).toDateString();
  if (day(a) !== day(b)) return `${x} – ${y}`;
  const hm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  return `${x} – ${hm.format(eventDate({ timestamp: b }))}`;
}

function timeTag(ts, short) {
  return h('time', { datetime: ts, title: formatTime(ts), text: short ? shortTime(ts) : formatTime(ts) });
}

function portrait(best, label) {
  return best ? img(best.normalized || best.thumbnail, `Face of ${label}`, 'portrait')
    : h('div', { class: 'portrait noimg', text: 'no face' });
}

// ---------------------------------------------------------------- grid

function personCard(summary) {
  const card = h('a', { class: 'person card', href: `#/person/${summary.id}`, 'data-id': summary.id });
  card.summary = { ...summary, cam_ids: [...summary.cam_ids] };
  card.render = () => {
    const s = card.summary;
    const label = personLabel(s.meta, s.id);
    const seen = s.sightings
      ? h('div', { class: 'small person-seen' }, h('span', { class: 'muted', text: 'Last seen' }), timeTag(s.last_seen, true),
        h('span', { class: 'muted', text: 'First seen' }), timeTag(s.first_seen, true))
      : h('div', { class: 'muted small', text: 'No camera has seen this person' });
    card.replaceChildren(h('div', { class: 'face-slot' }, portrait(s.best_face, label)),
      h('div', { class: 'person-text' },
        h('div', { class: 'person-name', text: label }),
        h('div', { class: 'person-badges' }, friendBadge(s.friend),
          h('span', { class: 'small person-count', text: plural(s.sightings, 'sighting') })),
        s.cam_ids.length ? h('div', { class: 'muted small person-cams', text: s.cam_ids.map(cameraName).join(', ') }) : null,
        seen));
    card.dataset.search = `${label} ${s.id}`.toLowerCase();
  };
  // A live event of this person: the card follows it without asking the server.
  card.addSighting = (ev) => {
    const s = card.summary;
    s.face_count += 1;
    s.friend = Boolean(ev.friend);
    if (ev.person_meta) s.meta = ev.person_meta;
    if (ev.cam_id !== null && ev.cam_id !== undefined) {
      s.sightings += 1;
      if (!s.first_seen || ev.timestamp < s.first_seen) s.first_seen = ev.timestamp;
      if (!s.last_seen || ev.timestamp > s.last_seen) s.last_seen = ev.timestamp;
      if (!s.cam_ids.includes(ev.cam_id)) s.cam_ids = [...s.cam_ids, ev.cam_id].sort();
    }
    if (!s.best_face) s.best_face = { id: ev.face_id ?? ev.id, thumbnail: ev.thumbnail, normalized: ev.normalized };
    card.render();
  };
  card.render();
  return card;
}

function summaryFromEvent(ev) {
  return { id: ev.person_id, meta: ev.person_meta || '', face_count: 0, sightings: 0, cam_ids: [],
    first_seen: null, last_seen: null, best_face: null, friend: false };
}

async function viewPersons() {
  const view = setMain();
  const grid = h('div', { class: 'grid persons', id: 'persons' });
  const more = h('button', { type: 'button', class: 'ghost more', hidden: true }, 'Load more persons');
  const live = liveBadge();
  const find = h('input', { type: 'search', id: 'person-find', placeholder: 'Find by name or id', 'aria-label': 'Find a person by name or id' });
  main().append(h('div', { class: 'page-head' }, h('h1', {}, 'Persons'), live,
    h('span', { class: 'muted small' }, `Times in ${ZONE}`), h('div', { class: 'page-tools' }, find)), grid, more);
  state.persons.clear();
  const cards = new Map();
  let newest = 0;
  let after = 0;
  try {
    await loadCameras();
    after = await latestEventId();
  } catch (err) { reportError(err); }
  const filter = () => {
    const q = find.value.trim().toLowerCase();
    for (const card of cards.values()) card.hidden = Boolean(q) && !card.dataset.search.includes(q);
  };
  find.addEventListener('input', filter);
  let next = `/v1/persons?limit=${PERSON_PAGE}`;
  const load = async () => {
    more.disabled = true;
    try {
      const data = await api('GET', next);
      if (view !== state.view) return;
      for (const s of data.results) {
        if (cards.has(s.id)) continue;
        const card = personCard(s);
        cards.set(s.id, card);
        newest = Math.max(newest, s.id);
        grid.append(card);
      }
      next = data.next_page;
      more.hidden = !next;
      filter();
      if (!grid.children.length) {
        grid.replaceChildren(emptyState('No persons yet',
          'Persons are made when the backend groups faces: start it with --person-identify 1, then camera events of the same face are joined into one person.',
          ['See them arrive on the ', h('a', { href: '#/events' }, 'Events'), ' page.']));
      }
    } catch (err) { reportError(err); } finally { more.disabled = false; }
  };
  // A new event updates its person's card, or adds the card of a new person at the top.
  const onEvent = (ev) => {
    const id = ev.person_id;
    if (id === null || id === undefined) return;
    state.persons.delete(id);
    if (cards.has(id)) { cards.get(id).addSighting(ev); return; }
    if (id <= newest) return; // an older person on a page not loaded yet
    newest = id;
    grid.querySelector('.empty')?.remove();
    const card = personCard(summaryFromEvent(ev));
    card.addSighting(ev);
    card.classList.add('new');
    cards.set(id, card);
    grid.prepend(card);
    filter();
  };
  more.addEventListener('click', load);
  await load();
  if (view === state.view) openStream(after, onEvent, live.status);
}

// ---------------------------------------------------------------- person picker

// The newest persons of the token (for merge and move), loaded once per page view.
function pickerPersons(ctx) {
  if (!ctx.pickList) {
    ctx.pickList = (async () => {
      const all = [];
      let next = `/v1/persons?limit=${PICKER_PAGE}`;
      for (let i = 0; next && i < PICKER_MAX_PAGES; i += 1) {
        const data = await api('GET', next);
        all.push(...data.results);
        next = data.next_page;
      }
      return all;
    })();
    ctx.pickList.catch(() => { ctx.pickList = null; });
  }
  return ctx.pickList;
}

function pickerOption(value, label, detail, face, onPick) {
  const button = h('button', { type: 'button', class: 'pick', 'data-pick': value, role: 'option' },
    face ? img(face.normalized || face.thumbnail, '', 'pick-face')
      : h('span', { class: 'pick-face noimg', text: value === 'new' ? '+' : '?' }),
    h('span', { class: 'pick-text' }, h('span', { class: 'pick-name', text: label }),
      detail ? h('span', { class: 'muted small', text: detail }) : null));
  button.addEventListener('click', () => onPick(value, label));
  return h('li', {}, button);
}

// A search box over the persons list; a number typed is taken as a person id even when the
// person is not among those loaded (the API answers in words if it does not exist).
function personPicker(ctx, { exclude, newLabel, label, onPick }) {
  const input = h('input', { type: 'search', class: 'picker-search', placeholder: 'Search by name or person id', 'aria-label': label });
  const list = h('ul', { class: 'picker-list', role: 'listbox', 'aria-label': label });
  let all = [];
  const render = () => {
    const q = input.value.trim().toLowerCase().replace(/^#/, '');
    const items = [];
    if (newLabel) items.push(pickerOption('new', newLabel, 'split the face off', null, onPick));
    const hits = all.filter((s) => s.id !== exclude && (!q || String(s.id) === q
      || personLabel(s.meta, s.id).toLowerCase().includes(q)));
    for (const s of hits.slice(0, PICKER_SHOWN)) {
      items.push(pickerOption(String(s.id), personLabel(s.meta, s.id),
        `#${s.id} · ${plural(s.sightings, 'sighting')}`, s.best_face, onPick));
    }
    if (/^\d+$/.test(q) && Number(q) !== exclude && !hits.some((s) => String(s.id) === q)) {
      items.push(pickerOption(q, `Person ${q}`, 'by id', null, onPick));
    }
    if (hits.length > PICKER_SHOWN) {
      items.push(h('li', { class: 'muted small', text: `${hits.length - PICKER_SHOWN} more: type more of the name` }));
    }
    if (!items.length) {
      items.push(h('li', { class: 'muted small', text: all.length <= 1
        ? 'No other person yet. Type a person id if you know it.'
        : 'No person matches. Type a name or a person id.' }));
    }
    list.replaceChildren(...items);
  };
  const wrap = h('div', { class: 'picker' }, input, list);
  list.addEventListener('mousedown', (ev) => ev.preventDefault()); // the search keeps the focus
  const fold = () => { list.hidden = !input.value.trim() && !wrap.contains(document.activeElement); };
  input.addEventListener('input', () => { render(); fold(); });
  input.addEventListener('focus', fold);
  wrap.addEventListener('focusout', () => setTimeout(fold, 0));
  render();
  fold();
  pickerPersons(ctx).then((persons) => { all = persons; render(); }).catch(reportError);
  return wrap;
}

// ---------------------------------------------------------------- person page parts

function personHead(ctx) {
  const { p } = ctx;
  const label = personLabel(p.meta, p.id);
  const nameInput = h('input', { name: 'meta', value: p.meta, placeholder: 'Name', 'aria-label': 'Name', maxlength: 1000 });
  const rename = h('form', { class: 'inline-form' }, nameInput,
    h('button', { type: 'submit', class: 'primary' }, 'Rename'));
  rename.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('PUT', `/v1/person/id/${p.id}`, { meta: nameInput.value });
      showBanner('Saved.', 'ok');
      await ctx.refresh();
    } catch (err) { reportError(err); }
  });
  const cams = p.cam_ids.length ? p.cam_ids.map(cameraName).join(', ') : 'none';
  const seen = p.sightings
    ? h('div', { class: 'muted small' }, 'First seen ', timeTag(p.first_seen), ' · last seen ', timeTag(p.last_seen))
    : h('div', { class: 'muted small', text: 'No camera has seen this person yet.' });
  return [h('div', { class: 'face-slot big' }, portrait(p.best_face, label)),
    h('div', { class: 'person-head-text' }, h('h1', { text: label }),
      h('div', { class: 'person-badges' }, friendBadge(p.friend),
        h('span', { class: 'muted person-counts', text: `${plural(p.sightings, 'sighting')} · ${plural(p.face_count, 'face')} · cameras: ${cams}` })),
      seen,
      h('div', { class: 'muted small', text: `Person ${p.id}, created ${formatTime(p.timestamp)} (times in ${ZONE})` }),
      rename)];
}

function mergeSection(ctx) {
  const { p } = ctx;
  const label = personLabel(p.meta, p.id);
  const picker = personPicker(ctx, {
    exclude: p.id, label: 'Person to merge into this one',
    onPick: async (value, otherLabel) => {
      if (!window.confirm(`Merge ${otherLabel} (person ${value}) into ${label}? All its faces move to ${label}. You can undo it in the history below.`)) return;
      try {
        await api('POST', `/v1/person/id/${p.id}/merge`, { person_id: value });
        showBanner(`${otherLabel} is merged into ${label}. Undo it in the history below if it was a mistake.`, 'ok');
        ctx.pickList = null;
        await ctx.refresh();
      } catch (err) { reportError(err); }
    },
  });
  return h('section', { class: 'card person-tool', id: 'merge' },
    h('h2', {}, 'Merge a person into this one'),
    h('p', { class: 'muted small' }, 'The same someone split into two persons? Pick the other one: its faces move here and new faces of either join this person.'),
    picker);
}

function timelineSection(ctx, events) {
  const { p } = ctx;
  if (!p.cameras.length) {
    return emptyState('No sightings to show on a timeline',
      'When a camera posts a face of this person, its sightings appear here per camera.');
  }
  const t = (ts) => eventDate({ timestamp: ts }).getTime();
  const start = Math.min(...p.cameras.map((c) => t(c.first_seen)));
  const end = Math.max(...p.cameras.map((c) => t(c.last_seen)));
  const span = Math.max(end - start, 1);
  const pct = (ts) => `${(100 * (t(ts) - start)) / span}%`;
  const lanes = p.cameras.map((c) => {
    const bar = h('div', { class: 'lane-bar', title: `${formatTime(c.first_seen)} – ${formatTime(c.last_seen)}` });
    bar.style.left = pct(c.first_seen); // CSSOM: allowed by the CSP
    bar.style.width = `max(${(100 * (t(c.last_seen) - t(c.first_seen))) / span}%, 4px)`;
    const dots = events.filter((ev) => ev.cam_id === c.cam_id).map((ev) => {
      const dot = h('span', { class: `lane-dot ${ev.friend ? 'is-friend' : ''}`, title: formatTime(ev.timestamp) });
      dot.style.left = pct(ev.timestamp);
      return dot;
    });
    return h('div', { class: 'lane', 'data-cam': c.cam_id },
      h('div', { class: 'lane-label' }, h('span', { class: 'lane-name', text: cameraName(c.cam_id) }),
        h('span', { class: 'muted small', text: `${plural(c.sightings, 'sighting')} · ${timeRange(c.first_seen, c.last_seen)}` })),
      h('div', { class: 'lane-track' }, bar, dots));
  });
  return h('div', { class: 'card timeline' }, lanes,
    h('div', { class: 'lane-axis muted small' }, h('span', { text: shortTime(p.cameras.reduce((a, c) => (c.first_seen < a ? c.first_seen : a), p.cameras[0].first_seen)) }),
      h('span', { text: shortTime(p.cameras.reduce((a, c) => (c.last_seen > a ? c.last_seen : a), p.cameras[0].last_seen)) })));
}

async function notThisPerson(ctx, faceId) {
  const label = personLabel(ctx.p.meta, ctx.p.id);
  if (!window.confirm(`Face ${faceId} is not ${label}? It leaves ${label} and is never joined to it again automatically (nor are the faces of its track, nor faces that look more like it than like ${label}).`)) return;
  try {
    await api('POST', `/v1/person/id/${ctx.p.id}/not_this_person`, { face_ids: [faceId] });
    showBanner(`Face ${faceId} is no longer ${label}'s. Undo it in the history below.`, 'ok');
    await ctx.refresh();
  } catch (err) { reportError(err); }
}

function moveFace(ctx, card, faceId) {
  const open = card.querySelector('.move-panel');
  if (open) { open.remove(); return; }
  const label = personLabel(ctx.p.meta, ctx.p.id);
  const panel = h('div', { class: 'move-panel' }, h('div', { class: 'small', text: `Move face ${faceId} to:` }),
    personPicker(ctx, {
      exclude: ctx.p.id, label: `Person to move face ${faceId} to`, newLabel: 'A new person',
      onPick: async (value, otherLabel) => {
        const target = value === 'new' ? 'a new person' : `${otherLabel} (person ${value})`;
        if (!window.confirm(`Move face ${faceId} from ${label} to ${target}? It never rejoins ${label} automatically.`)) return;
        try {
          const face = await api('PUT', `/v1/face/id/${faceId}`, { person_id: value });
          showBanner(`Face ${faceId} moved to person ${face.person_id}. Undo it in the history below.`, 'ok');
          ctx.pickList = null;
          await ctx.refresh();
        } catch (err) { reportError(err); }
      },
    }));
  card.append(panel);
  panel.querySelector('input').focus();
}

function sightingCard(ctx, ev) {
  const card = eventCard({ ...ev, person_meta: ctx.p.meta });
  const faceId = ev.face_id ?? ev.id;
  card.append(h('div', { class: 'face-actions' },
    h('button', { type: 'button', class: 'ghost small move-face', onclick: () => moveFace(ctx, card, faceId) }, 'Move…'),
    h('button', { type: 'button', class: 'danger small not-this', onclick: () => notThisPerson(ctx, faceId) }, 'Not this person')));
  return card;
}

// ---------------------------------------------------------------- history

function otherLink(id) {
  return id === null || id === undefined ? 'no person' : h('a', { href: `#/person/${id}` }, `person ${id}`);
}

function historyWords(e, pid) {
  const faces = plural(e.face_ids.length, 'face');
  const here = e.person_id === pid;
  switch (e.kind) {
    case 'merge':
      return here ? ['Merged ', otherLink(e.other_person_id), ` into this person (${faces})`]
        : ['Merged into ', otherLink(e.person_id), ` (${faces})`];
    case 'unmerge':
      return here ? ['Undid the merge of ', otherLink(e.other_person_id), ` (${faces} went back)`]
        : ['Split off again from ', otherLink(e.person_id), ` (${faces} came back)`];
    case 'move':
      return here ? [`Moved ${faces} to `, otherLink(e.other_person_id)]
        : [`Got ${faces} from `, otherLink(e.person_id)];
    case 'not_this_person':
      return [`Marked ${faces} as not this person`];
    case 'identity_switch':
      return here ? ['A face of this person\u2019s track was someone else: ', otherLink(e.other_person_id)]
        : ['Got a face from the track of ', otherLink(e.person_id), ' (tracker identity switch)'];
    default:
      return [e.kind];
  }
}

function undoButton(ctx, e) {
  const { p } = ctx;
  if (e.kind === 'merge' && !e.undone_by) {
    return h('button', { type: 'button', class: 'ghost small undo', onclick: async () => {
      try {
        await api('POST', `/v1/person/event/${e.id}/undo`);
        showBanner('The merge is undone: its faces are back with their person, and the two are never merged automatically again.', 'ok');
        ctx.pickList = null;
        await ctx.refresh();
      } catch (err) { reportError(err); }
    } }, 'Undo merge');
  }
  const away = e.face_ids.filter((id) => !p.faces.includes(id));
  if ((e.kind === 'move' || e.kind === 'not_this_person') && e.person_id === p.id && away.length) {
    return h('button', { type: 'button', class: 'ghost small undo', onclick: async () => {
      try {
        for (const id of away) await api('PUT', `/v1/face/id/${id}`, { person_id: p.id });
        showBanner(`${plural(away.length, 'face')} back with ${personLabel(p.meta, p.id)}.`, 'ok');
        await ctx.refresh();
      } catch (err) { reportError(err); }
    } }, 'Undo: put back');
  }
  return null;
}

function historySection(ctx, events) {
  if (!events.length) {
    return emptyState('No changes yet',
      'Merges, moved faces and \u201cnot this person\u201d marks of this person are listed here, newest first, and can be undone here.');
  }
  return h('ol', { class: 'card history-list' }, [...events].reverse().map((e) => h('li', { class: `history-item kind-${e.kind}`, 'data-event': e.id },
    h('div', { class: 'history-text' }, h('span', {}, historyWords(e, ctx.p.id)),
      h('span', { class: 'muted small' }, `${e.actor === 'auto' ? 'automatically' : 'by an operator'} · `, timeTag(e.timestamp, true),
        e.undone_by ? ' · undone' : '')),
    undoButton(ctx, e))));
}

// ---------------------------------------------------------------- person page

async function viewPerson(hash) {
  const personId = Number((/^#\/person\/(\d+)$/.exec(hash) || [])[1]);
  const view = setMain();
  state.persons.delete(personId);
  const ctx = { p: null, pickList: null, events: [] };
  try {
    await loadCameras();
    ctx.p = await api('GET', `/v1/person/id/${personId}`);
  } catch (err) {
    if (view === state.view) {
      main().append(emptyState('Person not available', err.message,
        h('a', { href: '#/persons' }, 'Back to all persons')));
    }
    return;
  }
  if (view !== state.view) return;
  const head = h('section', { class: 'card person-head' });
  const notice = h('div', { class: 'merged-note', hidden: true });
  const timeline = h('div', { id: 'timeline' });
  const sightings = h('div', { class: 'grid events', id: 'sightings' });
  const more = h('button', { type: 'button', class: 'ghost more', hidden: true }, 'Load older sightings');
  const merge = h('div', { id: 'merge-slot' });
  const history = h('div', { id: 'person-history' });
  main().append(h('p', {}, h('a', { href: '#/persons' }, '\u2190 All persons')), notice, head,
    h('h2', {}, 'Timeline per camera'), timeline,
    h('div', { class: 'person-tools' }, merge,
      h('section', { class: 'person-tool' }, h('h2', {}, 'History'), history)),
    h('h2', {}, 'Sightings'), h('p', { class: 'muted small' }, 'Each face has its own actions: Move\u2026 gives it to another person or a new one (split); Not this person takes it away for good.'),
    sightings, more);

  const renderTop = () => {
    head.replaceChildren(...personHead(ctx));
    notice.hidden = !ctx.p.merged_into;
    notice.replaceChildren(...(ctx.p.merged_into ? [h('span', { text: 'This person was merged into ' }),
      h('a', { href: `#/person/${ctx.p.merged_into}` }, `person ${ctx.p.merged_into}`),
      h('span', { text: '. Undo the merge in the history below to get it back.' })] : []));
    timeline.replaceChildren(timelineSection(ctx, ctx.events));
  };
  const loadHistory = async () => {
    const data = await api('GET', `/v1/person/id/${ctx.p.id}/events`);
    if (view === state.view) history.replaceChildren(historySection(ctx, data.results));
  };
  let next = null;
  let round = 0; // each reset starts a round; answers of an older round are dropped
  const shown = new Set();
  const loadSightings = async () => {
    more.disabled = true;
    const mine = round;
    try {
      const data = await api('GET', next);
      if (view !== state.view || mine !== round) return;
      for (const ev of data.results) {
        if (shown.has(ev.id)) continue;
        shown.add(ev.id);
        ctx.events.push(ev);
        sightings.append(sightingCard(ctx, ev));
      }
      next = data.next_page;
      more.hidden = !next;
      timeline.replaceChildren(timelineSection(ctx, ctx.events));
      if (!sightings.children.length) {
        sightings.replaceChildren(ctx.p.face_count
          ? emptyState('No camera sightings', 'This person has faces, but none was posted by a camera.')
          : emptyState('No faces left', 'All faces of this person were moved away or merged. Undo a change in the history below, or go back to all persons.'));
      }
    } catch (err) { reportError(err); } finally { more.disabled = false; }
  };
  const resetSightings = () => {
    round += 1;
    next = `/v1/person/history/id/${ctx.p.id}?limit=${PAGE}`;
    shown.clear();
    ctx.events = [];
    sightings.replaceChildren();
  };
  // After an action: the person, its sightings and its history again from the server.
  ctx.refresh = async () => {
    const p = await api('GET', `/v1/person/id/${ctx.p.id}`);
    if (view !== state.view) return;
    ctx.p = p;
    state.persons.delete(p.id);
    resetSightings();
    renderTop();
    merge.replaceChildren(mergeSection(ctx));
    await Promise.all([loadSightings(), loadHistory()]);
  };
  renderTop();
  merge.replaceChildren(mergeSection(ctx));
  let after = 0;
  try { after = await latestEventId(); } catch (err) { reportError(err); }
  resetSightings();
  more.addEventListener('click', loadSightings);
  await Promise.all([loadSightings(), loadHistory().catch(reportError)]);
  if (view !== state.view) return;
  openStream(after, (ev) => {
    if (ev.person_id !== ctx.p.id || shown.has(ev.id)) return;
    shown.add(ev.id);
    ctx.events.push(ev);
    sightings.querySelector('.empty')?.remove();
    const card = sightingCard(ctx, ev);
    card.classList.add('new');
    sightings.prepend(card);
    api('GET', `/v1/person/id/${ctx.p.id}`).then((p) => {
      if (view !== state.view) return;
      ctx.p = p;
      if (head.contains(document.activeElement)) timeline.replaceChildren(timelineSection(ctx, ctx.events));
      else renderTop(); // (not while the operator is typing a new name)
    }).catch(() => {});
  }, () => {});
}

PAGES.persons = viewPersons;
PAGES.person = viewPerson;
