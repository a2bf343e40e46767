// Cascade's web page: pick your content cache, see the caches' health, manage them as an admin.
// Plain JavaScript, no framework, nothing loaded from elsewhere. It uses the server's /api/v0 API like
// any other client, with Basic credentials that the server checks with the origin registry. The
// credentials stay in this tab (sessionStorage), never in a cookie, and are sent only to this server.

import { initWarm, loadWarm } from './warm.js';

const API = new URL('../api/v0', location.href).pathname;
const AUTH_KEY = 'cascade.authorization';
const HEALTH_REFRESH_MS = 15000;

/** Everything the page knows; rendered by the render* functions. */
const state = {
  authorization: /** @type {string|null} */ (null),
  user: '',
  admin: false,
  caches: /** @type {{id:string,name:string,host:string}[]} */ ([]),
  health: /** @type {Map<string, any>} */ (new Map()),
  /** The saved choice: a cache id, or null for the default. */
  saved: /** @type {string|null} */ (null),
  /** The choice selected on the page and not saved yet ('' = the default). */
  pending: /** @type {string|undefined} */ (undefined),
  defaultId: /** @type {string|null} */ (null),
  rules: { namespaces: /** @type {{namespace:string,contentCacheUUID:string}[]} */ ([]), networks: /** @type {{cidr:string,contentCacheUUID:string}[]} */ ([]) },
  tab: 'pick',
};

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

// ---- DOM helpers ---------------------------------------------------------------------------------------

const PROPERTIES = new Set(['checked', 'value', 'disabled', 'hidden', 'selected', 'required']);

/**
 * Creates an element. Text is always set as text (never parsed as HTML).
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...any} children
 * @returns {HTMLElement}
 */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) /** @type {any} */ (el)[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Shows a message in a status line: kind is 'ok', 'error' or 'busy'. */
function say(/** @type {string} */ id, /** @type {string} */ text, kind = 'ok') {
  const el = $(id);
  el.textContent = text;
  el.className = `status ${text ? kind : ''}`;
}

// ---- formatting ----------------------------------------------------------------------------------------

function formatBytes(/** @type {number|null|undefined} */ n) {
  if (n === null || n === undefined) return 'n/a';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function formatRatio(/** @type {number|null|undefined} */ r) {
  if (r === null || r === undefined) return 'n/a';
  return `${(r * 100).toFixed(r === 0 || r === 1 ? 0 : 1)} %`;
}

function formatTime(/** @type {string|null|undefined} */ iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

/** The badge of a cache's health. */
function healthBadge(/** @type {any} */ health) {
  const status = health?.status ?? 'unknown';
  const text = status === 'healthy' ? 'reachable' : status === 'unhealthy' ? 'unreachable' : 'not checked yet';
  const cls = status === 'healthy' ? 'ok' : status === 'unhealthy' ? 'bad' : 'unknown';
  const checked = health?.checkedAt ? `checked at ${formatTime(health.checkedAt)}` : '';
  const title = [checked, health?.latencyMs !== null && health?.latencyMs !== undefined ? `${health.latencyMs} ms` : '', health?.error ?? ''].filter(Boolean).join(' \u00b7 ');
  return h('span', { class: `badge ${cls}`, dataset: { status }, title: title || undefined }, text);
}

/** The figures of a cache's health, as a definition list. */
function healthStats(/** @type {any} */ health) {
  const lastError = health?.error ?? health?.lastError ?? null;
  const lastErrorAt = health?.error ? health?.checkedAt : health?.lastErrorAt;
  const disk = health?.diskBytes ?? null;
  const free = health?.storageFreeBytes ?? null;
  const capacity = health?.storageCapacityBytes ?? null;
  const stat = (/** @type {string} */ label, /** @type {string} */ value, /** @type {string} */ key, title = '') =>
    h('div', { class: `stat ${key}`, dataset: { stat: key } }, h('dt', {}, label), h('dd', { title: title || undefined }, value));
  return h(
    'dl',
    { class: 'stats' },
    stat('Latency', health?.latencyMs === null || health?.latencyMs === undefined ? 'n/a' : `${health.latencyMs} ms`, 'latency'),
    stat('Hit ratio', formatRatio(health?.hitRatio), 'hit-ratio'),
    stat('Disk used', formatBytes(disk), 'disk', free !== null && capacity !== null ? `${formatBytes(free)} free of ${formatBytes(capacity)}` : ''),
    stat('Last error', lastError ? `${lastError}${lastErrorAt ? ` (${formatTime(lastErrorAt)})` : ''}` : 'none', 'last-error'),
  );
}

// ---- the API -------------------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(/** @type {number} */ status, /** @type {string} */ code, /** @type {string} */ message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the API. `credentials: 'omit'` keeps the browser's own login dialog and cookies out of it: the
 * page sends the Authorization header itself.
 */
async function api(/** @type {string} */ method, /** @type {string} */ path, /** @type {any} */ body, authorization = state.authorization) {
  /** @type {Record<string,string>} */
  const headers = { accept: 'application/json' };
  if (authorization) headers.authorization = authorization;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(`${API}${path}`, { method, headers, credentials: 'omit', cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiFailure(0, 'NETWORK', 'The server cannot be reached.');
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const first = json?.errors?.[0];
    throw new ApiFailure(res.status, first?.code ?? `HTTP_${res.status}`, first?.message || `The server answered ${res.status}.`);
  }
  return json;
}

/** Runs an action; on a 401 the session is over (password changed, user removed): back to sign-in. */
async function guarded(/** @type {string} */ statusId, /** @type {() => Promise<void>} */ action) {
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 401) {
      signOut('Your session ended: the registry no longer accepts these credentials. Sign in again.');
      return;
    }
    say(statusId, err instanceof Error ? err.message : String(err), 'error');
  }
}

// ---- sign-in -------------------------------------------------------------------------------------------

/** The Basic header of a user name and password (UTF-8). */
function basic(/** @type {string} */ user, /** @type {string} */ password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

async function signIn(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const user = /** @type {HTMLInputElement} */ (form.elements.namedItem('username')).value.trim();
  const passwordInput = /** @type {HTMLInputElement} */ (form.elements.namedItem('password'));
  if (!user || user.includes(':')) {
    say('signin-status', 'Enter your user name (without a colon).', 'error');
    return;
  }
  const authorization = basic(user, passwordInput.value);
  say('signin-status', 'Signing in…', 'busy');
  $('signin-submit').setAttribute('disabled', '');
  try {
    const me = await api('GET', '/accounts/me', undefined, authorization);
    passwordInput.value = '';
    sessionStorage.setItem(AUTH_KEY, authorization);
    await start(authorization, me);
  } catch (err) {
    const text =
      err instanceof ApiFailure && err.status === 401 ? 'The registry did not accept this user name and password.' : err instanceof Error ? err.message : String(err);
    say('signin-status', text, 'error');
  } finally {
    $('signin-submit').removeAttribute('disabled');
  }
}

function signOut(message = '') {
  sessionStorage.removeItem(AUTH_KEY);
  state.authorization = null;
  state.user = '';
  state.admin = false;
  state.pending = undefined;
  $('app-view').hidden = true;
  $('who').hidden = true;
  $('signin-view').hidden = false;
  say('signin-status', message, message ? 'error' : 'ok');
  /** @type {HTMLInputElement} */ ($('signin-username')).focus();
}

/** Shows the signed-in page. */
async function start(/** @type {string} */ authorization, /** @type {{user:string, admin:boolean}} */ me) {
  state.authorization = authorization;
  state.user = me.user;
  state.admin = me.admin;
  $('who-name').textContent = me.user;
  $('who-admin').hidden = !me.admin;
  $('who').hidden = false;
  $('tabs').hidden = false;
  $('tab-manage').hidden = !me.admin;
  $('signin-view').hidden = true;
  $('app-view').hidden = false;
  showTab(location.hash.slice(1));
  say('pick-status', 'Loading…', 'busy');
  await guarded('pick-status', async () => {
    await loadAll();
    say('pick-status', '');
  });
}

// ---- loading -------------------------------------------------------------------------------------------

async function loadAll() {
  const user = encodeURIComponent(state.user);
  const [caches, settings, def, rules] = await Promise.all([
    api('GET', '/content_caches'),
    api('GET', `/accounts/${user}/settings`),
    api('GET', '/content_caches_default'),
    api('GET', '/content_cache_rules'),
  ]);
  state.caches = caches;
  state.saved = settings.contentCacheUUID ?? null;
  state.defaultId = def.contentCacheUUID ?? null;
  state.rules = rules;
  if (state.pending !== undefined && state.pending !== '' && !caches.some((/** @type {any} */ c) => c.id === state.pending)) state.pending = undefined;
  renderAll();
  await Promise.all([loadHealth(), state.admin ? loadWarm() : undefined]);
}

async function loadHealth() {
  const results = await Promise.all(
    state.caches.map((c) =>
      api('GET', `/content_caches/${c.id}/health`).then(
        (health) => [c.id, health],
        (err) => {
          if (err instanceof ApiFailure && err.status === 401) throw err;
          return [c.id, undefined];
        },
      ),
    ),
  );
  for (const [id, health] of results) if (health) state.health.set(id, health);
  renderHealth();
}

// ---- the user's view -----------------------------------------------------------------------------------

const cacheName = (/** @type {string|null} */ id) => state.caches.find((c) => c.id === id)?.name ?? null;

function renderPick() {
  const list = $('cache-list');
  const selected = state.pending !== undefined ? state.pending : (state.saved ?? '');
  const defaultName = cacheName(state.defaultId);
  const option = (/** @type {string} */ value, /** @type {HTMLElement[]} */ body, /** @type {Record<string,string>} */ data) =>
    h(
      'label',
      { class: `card option${selected === value ? ' selected' : ''}`, dataset: data },
      h('input', { type: 'radio', name: 'cache', value, checked: selected === value, onchange: () => choose(value) }),
      h('div', { class: 'card-body' }, body),
    );
  const cards = [
    option(
      '',
      [
        h('div', { class: 'card-head' }, h('span', { class: 'name' }, 'Default'), state.saved === null ? h('span', { class: 'tag current' }, 'saved') : null),
        h(
          'p',
          { class: 'hint' },
          'Let the server decide: rules for the repository\u2019s namespace or your network, then the default cache',
          defaultName ? ` (now ${defaultName}).` : '. No default is set: the server serves layers itself.',
        ),
      ],
      { id: '', name: '' },
    ),
    ...state.caches.map((c) =>
      option(
        c.id,
        [
          h(
            'div',
            { class: 'card-head' },
            h('span', { class: 'name' }, c.name),
            h('span', { class: 'health-badge', dataset: { healthFor: c.id } }),
            state.defaultId === c.id ? h('span', { class: 'tag' }, 'default') : null,
            state.saved === c.id ? h('span', { class: 'tag current' }, 'saved') : null,
          ),
          h('div', { class: 'host' }, c.host),
          h('div', { class: 'health-stats', dataset: { statsFor: c.id } }),
        ],
        { id: c.id, name: c.name },
      ),
    ),
  ];
  list.replaceChildren(...cards);
  if (state.caches.length === 0) list.append(h('p', { class: 'hint empty' }, 'No cache is registered yet. An admin registers them.'));
  updateSaveButton();
}

function choose(/** @type {string} */ value) {
  state.pending = value;
  for (const card of document.querySelectorAll('#cache-list .option')) card.classList.toggle('selected', /** @type {HTMLElement} */ (card).dataset.id === value);
  updateSaveButton();
  say('pick-status', '');
}

function updateSaveButton() {
  const changed = state.pending !== undefined && state.pending !== (state.saved ?? '');
  /** @type {HTMLButtonElement} */ ($('pick-save')).disabled = !changed;
}

async function savePick(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  if (state.pending === undefined) return;
  const chosen = state.pending === '' ? null : state.pending;
  say('pick-status', 'Saving…', 'busy');
  await guarded('pick-status', async () => {
    const saved = await api('PATCH', `/accounts/${encodeURIComponent(state.user)}/settings`, { contentCacheUUID: chosen });
    state.saved = saved.contentCacheUUID ?? null;
    state.pending = undefined;
    renderPick();
    renderHealth();
    const name = cacheName(state.saved);
    say('pick-status', name ? `Saved: your layer downloads now go to ${name}.` : 'Saved: the server decides which cache serves you.', 'ok');
  });
}

// ---- health, rendered in place (so a refresh keeps whatever is being edited) ---------------------------

function renderHealth() {
  for (const el of document.querySelectorAll('[data-health-for]')) {
    const id = /** @type {HTMLElement} */ (el).dataset.healthFor ?? '';
    el.replaceChildren(healthBadge(state.health.get(id)));
  }
  for (const el of document.querySelectorAll('[data-stats-for]')) {
    const id = /** @type {HTMLElement} */ (el).dataset.statsFor ?? '';
    el.replaceChildren(healthStats(state.health.get(id)));
  }
}

// ---- the admin's view ----------------------------------------------------------------------------------

/** Fills a <select> with the caches (and a first "none" entry when `none` is given). */
function fillSelect(/** @type {string} */ id, /** @type {string|null} */ selected, /** @type {string|undefined} */ none) {
  const select = /** @type {HTMLSelectElement} */ ($(id));
  const keep = select.value;
  const options = [];
  if (none !== undefined) options.push(h('option', { value: '' }, none));
  for (const c of state.caches) options.push(h('option', { value: c.id }, c.name));
  select.replaceChildren(...options);
  const want = selected !== null ? selected : keep;
  if ([...select.options].some((o) => o.value === want)) select.value = want;
}

function renderManage() {
  if (!state.admin) return;
  const rows = $('admin-caches');
  rows.replaceChildren(
    ...state.caches.map((c) => {
      const name = h('input', { value: c.name, 'aria-label': `Name of ${c.name}`, name: 'name', required: true, maxlength: '128' });
      const host = h('input', { value: c.host, 'aria-label': `Host of ${c.name}`, name: 'host', required: true, spellcheck: 'false', inputmode: 'url' });
      const del = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
      let armed = /** @type {ReturnType<typeof setTimeout>|undefined} */ (undefined);
      del.addEventListener('click', () => {
        if (!armed) {
          del.textContent = 'Confirm delete';
          del.classList.add('armed');
          armed = setTimeout(() => {
            armed = undefined;
            del.textContent = 'Delete';
            del.classList.remove('armed');
          }, 5000);
          return;
        }
        clearTimeout(armed);
        void deleteCache(c);
      });
      return h(
        'form',
        { class: 'row cache-row', dataset: { id: c.id, name: c.name }, onsubmit: (/** @type {SubmitEvent} */ e) => updateCache(e, c) },
        h('div', { class: 'row-main' }, h('div', { class: 'field' }, name), h('div', { class: 'field grow' }, host)),
        h('div', { class: 'row-side' }, h('span', { class: 'health-badge', dataset: { healthFor: c.id } }), h('button', { type: 'submit', 'data-action': 'save' }, 'Save'), del),
      );
    }),
  );
  if (state.caches.length === 0) rows.append(h('p', { class: 'hint empty' }, 'No cache is registered yet.'));

  fillSelect('default-select', state.defaultId ?? '', 'None: the server serves layers itself');
  fillSelect('namespace-cache', null, undefined);
  fillSelect('network-cache', null, undefined);

  const ruleRow = (/** @type {string} */ kind, /** @type {string} */ key, /** @type {string} */ cacheId) =>
    h(
      'div',
      { class: 'row rule-row', dataset: { kind, key } },
      h('div', { class: 'row-main' }, h('code', {}, key), h('span', { class: 'arrow', 'aria-hidden': 'true' }, '\u2192'), h('span', { class: 'name' }, cacheName(cacheId) ?? cacheId)),
      h('div', { class: 'row-side' }, h('button', { type: 'button', class: 'danger', onclick: () => deleteRule(kind, key) }, 'Remove')),
    );
  const ns = state.rules.namespaces.map((r) => ruleRow('namespaces', r.namespace, r.contentCacheUUID));
  $('namespace-rules').replaceChildren(...(ns.length ? ns : [h('p', { class: 'hint empty' }, 'No namespace rule.')]));
  const nets = state.rules.networks.map((r) => ruleRow('networks', r.cidr, r.contentCacheUUID));
  $('network-rules').replaceChildren(...(nets.length ? nets : [h('p', { class: 'hint empty' }, 'No network rule.')]));
}

async function reload(/** @type {string} */ statusId, /** @type {string} */ message) {
  await loadAll();
  say(statusId, message, 'ok');
}

async function addCache(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const name = /** @type {HTMLInputElement} */ (form.elements.namedItem('name'));
  const host = /** @type {HTMLInputElement} */ (form.elements.namedItem('host'));
  say('caches-status', 'Registering…', 'busy');
  await guarded('caches-status', async () => {
    const created = await api('POST', '/content_caches', { name: name.value.trim(), host: host.value.trim() });
    form.reset();
    await reload('caches-status', `Registered ${created.name} (${created.host}).`);
  });
}

async function updateCache(/** @type {SubmitEvent} */ event, /** @type {{id:string,name:string,host:string}} */ cache) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const name = /** @type {HTMLInputElement} */ (form.elements.namedItem('name')).value.trim();
  const host = /** @type {HTMLInputElement} */ (form.elements.namedItem('host')).value.trim();
  /** @type {Record<string,string>} */
  const patch = {};
  if (name !== cache.name) patch.name = name;
  if (host !== cache.host) patch.host = host;
  if (Object.keys(patch).length === 0) {
    say('caches-status', `${cache.name}: nothing changed.`, 'ok');
    return;
  }
  say('caches-status', 'Saving…', 'busy');
  await guarded('caches-status', async () => {
    const updated = await api('PATCH', `/content_caches/${cache.id}`, patch);
    await reload('caches-status', `Saved ${updated.name} (${updated.host}).`);
  });
}

async function deleteCache(/** @type {{id:string,name:string}} */ cache) {
  say('caches-status', `Deleting ${cache.name}…`, 'busy');
  await guarded('caches-status', async () => {
    await api('DELETE', `/content_caches/${cache.id}`);
    state.health.delete(cache.id);
    await reload('caches-status', `Deleted ${cache.name}. Its users fall back to the rules and the default.`);
  });
}

async function saveDefault(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const id = /** @type {HTMLSelectElement} */ ($('default-select')).value;
  say('default-status', 'Saving…', 'busy');
  await guarded('default-status', async () => {
    const saved = await api('PUT', '/content_caches_default', { contentCacheUUID: id || null });
    const name = cacheName(saved.contentCacheUUID);
    await reload('default-status', name ? `The default cache is ${name}.` : 'No default cache: the server serves layers itself.');
  });
}

async function setRule(/** @type {SubmitEvent} */ event, /** @type {'namespaces'|'networks'} */ kind) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const key = /** @type {HTMLInputElement} */ (form.elements.namedItem(kind === 'namespaces' ? 'namespace' : 'cidr')).value.trim();
  const cacheId = /** @type {HTMLSelectElement} */ (form.elements.namedItem('cache')).value;
  if (!cacheId) {
    say('rules-status', 'Register a cache first.', 'error');
    return;
  }
  say('rules-status', 'Saving…', 'busy');
  await guarded('rules-status', async () => {
    // Slashes of a namespace may stay as they are; a CIDR's slash is encoded.
    const path = kind === 'namespaces' ? key.split('/').map(encodeURIComponent).join('/') : encodeURIComponent(key);
    const rule = await api('PUT', `/content_cache_rules/${kind}/${path}`, { contentCacheUUID: cacheId });
    form.reset();
    await reload('rules-status', `${rule.namespace ?? rule.cidr} \u2192 ${cacheName(rule.contentCacheUUID)}.`);
  });
}

async function deleteRule(/** @type {string} */ kind, /** @type {string} */ key) {
  say('rules-status', 'Removing…', 'busy');
  await guarded('rules-status', async () => {
    const path = kind === 'namespaces' ? key.split('/').map(encodeURIComponent).join('/') : encodeURIComponent(key);
    await api('DELETE', `/content_cache_rules/${kind}/${path}`);
    await reload('rules-status', `Removed the rule for ${key}.`);
  });
}

// ---- the cache tree ------------------------------------------------------------------------------------

async function loadTree() {
  const tree = await api('GET', '/content_caches_tree');
  renderTree(tree);
  say('tree-status', '');
}

/** The health badge of a tree node: up, down or unknown. */
function treeBadge(/** @type {'up'|'down'|'unknown'} */ status) {
  const cls = status === 'up' ? 'ok' : status === 'down' ? 'bad' : 'unknown';
  const text = status === 'up' ? 'up' : status === 'down' ? 'down' : 'not checked yet';
  return h('span', { class: `badge ${cls}`, dataset: { status } }, text);
}

/** Where an upstream of a cache leads, in words. */
function upstreamLabel(/** @type {any} */ u) {
  const t = u.target;
  const name = t.kind === 'cache' ? t.name : t.kind === 'server' ? 'this server' : t.kind === 'origin' ? 'the origin' : (u.url ?? 'an unknown host');
  const marks = [u.parent ? 'parent' : '', u.up === false ? 'marked down' : '', u.errors ? `${u.errors} errors` : ''].filter(Boolean);
  return h('li', { class: `upstream${u.up === false ? ' down' : ''}`, dataset: { target: t.kind === 'cache' ? t.name : t.kind } }, name, marks.length ? h('span', { class: 'muted' }, ` (${marks.join(', ')})`) : null);
}

/** A cache's card in the tree. */
function treeCacheCard(/** @type {any} */ n) {
  const stat = (/** @type {string} */ label, /** @type {string} */ value, /** @type {string} */ key, title = '') =>
    h('div', { class: `stat ${key}`, dataset: { stat: key } }, h('dt', {}, label), h('dd', { title: title || undefined }, value));
  const none = n.since === null ? 'n/a' : null;
  const count = (/** @type {number|null} */ v) => (v === null || v === undefined ? 'n/a' : String(v));
  const since = n.since ? `since ${formatTime(n.since)}` : 'no figure yet: one more check of the cache is needed';
  return h(
    'article',
    { class: `node cache-node ${n.health}`, dataset: { kind: 'cache', name: n.name, health: n.health }, 'aria-label': `${n.name}, ${n.health}` },
    h(
      'div',
      { class: 'card-head' },
      treeBadge(n.health),
      h('span', { class: 'name' }, n.name),
      n.upstreamUnknown ? h('span', { class: 'tag warn', title: 'The cache has not reported its upstreams yet' }, 'upstream unknown') : null,
      n.inCycle ? h('span', { class: 'tag warn' }, 'in a cycle') : null,
    ),
    h('div', { class: 'host' }, n.host),
    h(
      'dl',
      { class: 'stats', title: since },
      stat('Hit ratio', none ?? formatRatio(n.hitRatio), 'hit-ratio', since),
      stat('Served', none ?? formatBytes(n.bytesServed), 'served', 'Blob bytes sent to clients in the last hour'),
      stat('Filled', none ?? formatBytes(n.bytesFilled), 'filled', 'Blob bytes received from upstream in the last hour'),
      stat('Upstream errors', none ?? count(n.upstreamErrors), 'upstream-errors', 'Failed requests to its upstreams in the last hour'),
      stat('Warm jobs', count(n.warmJobsInFlight), 'warm-jobs', 'Warm jobs running now'),
      stat('Disk used', formatBytes(n.diskBytes), 'disk'),
    ),
    n.upstreams.length ? h('div', { class: 'upstreams' }, h('span', { class: 'muted' }, 'Upstreams: '), h('ul', { class: 'upstream-list' }, n.upstreams.map(upstreamLabel))) : null,
    n.health === 'down' && n.lastError ? h('p', { class: 'node-error' }, `Last error: ${n.lastError}${n.lastErrorAt ? ` (${formatTime(n.lastErrorAt)})` : ''}`) : null,
  );
}

/** One node of the tree and, below it, its children. */
function treeItem(/** @type {any} */ n) {
  let card;
  if (n.kind === 'cache') card = treeCacheCard(n);
  else {
    const title = n.kind === 'origin' ? 'Origin registry' : n.kind === 'server' ? 'This server' : n.kind === 'cycle' ? 'Upstream cycle' : 'Unknown upstream';
    const detail =
      n.kind === 'cycle'
        ? `${[...n.caches, n.caches[0]].join(' \u2192 ')}: these caches fill from each other; fix their upstreams`
        : n.kind === 'server'
          ? 'Checks the caches and redirects pulls to them'
          : (n.url ?? 'URL shown to admins');
    card = h(
      'article',
      { class: `node ${n.kind}-node`, dataset: { kind: n.kind }, 'aria-label': title },
      h('div', { class: 'card-head' }, n.kind === 'cycle' || n.kind === 'unknown-upstream' ? h('span', { class: 'tag warn' }, n.kind === 'cycle' ? 'misconfigured' : 'not registered') : null, h('span', { class: 'name' }, title)),
      h('div', { class: n.kind === 'server' || n.kind === 'cycle' ? 'node-note' : 'host' }, detail),
    );
  }
  const children = n.children.length ? h('ul', {}, n.children.map(treeItem)) : null;
  return h('li', { dataset: { kind: n.kind, ...(n.kind === 'cache' ? { name: n.name } : {}) } }, card, children);
}

function renderTree(/** @type {any} */ tree) {
  const root = h('ul', { class: 'tree', 'aria-label': `The cache tree; figures over the last ${Math.round(tree.windowSeconds / 60)} minutes` }, tree.roots.map(treeItem));
  $('cache-tree').replaceChildren(root);
}

// ---- tabs and start-up ---------------------------------------------------------------------------------

function showTab(/** @type {string} */ tab) {
  state.tab = tab === 'manage' && state.admin ? 'manage' : tab === 'tree' ? 'tree' : 'pick';
  $('pick-view').hidden = state.tab !== 'pick';
  $('tree-view').hidden = state.tab !== 'tree';
  $('manage-view').hidden = state.tab !== 'manage';
  if (state.tab === 'tree') void guarded('tree-status', loadTree);
  for (const b of document.querySelectorAll('#tabs .tab')) {
    if (/** @type {HTMLElement} */ (b).dataset.tab === state.tab) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  history.replaceState(null, '', state.tab === 'pick' ? location.pathname : `#${state.tab}`);
}

function renderAll() {
  renderPick();
  renderManage();
  renderHealth();
}

async function init() {
  $('signin-form').addEventListener('submit', (e) => void signIn(/** @type {SubmitEvent} */ (e)));
  $('signout').addEventListener('click', () => signOut());
  $('pick-form').addEventListener('submit', (e) => void savePick(/** @type {SubmitEvent} */ (e)));
  $('refresh').addEventListener('click', () => void guarded('pick-status', async () => {
    await loadAll();
    say('pick-status', `Checked at ${new Date().toLocaleTimeString()}.`, 'ok');
  }));
  $('add-form').addEventListener('submit', (e) => void addCache(/** @type {SubmitEvent} */ (e)));
  $('default-form').addEventListener('submit', (e) => void saveDefault(/** @type {SubmitEvent} */ (e)));
  $('namespace-form').addEventListener('submit', (e) => void setRule(/** @type {SubmitEvent} */ (e), 'namespaces'));
  $('network-form').addEventListener('submit', (e) => void setRule(/** @type {SubmitEvent} */ (e), 'networks'));
  for (const b of document.querySelectorAll('#tabs .tab')) b.addEventListener('click', () => showTab(/** @type {HTMLElement} */ (b).dataset.tab ?? 'pick'));
  initWarm();

  $('tree-refresh').addEventListener('click', () => void guarded('tree-status', loadTree));

  setInterval(() => {
    if (state.authorization && document.visibilityState === 'visible') void guarded('pick-status', loadHealth);
    if (state.authorization && document.visibilityState === 'visible' && state.tab === 'tree') void guarded('tree-status', loadTree);
  }, HEALTH_REFRESH_MS);

  const saved = sessionStorage.getItem(AUTH_KEY);
  if (saved) {
    try {
      const me = await api('GET', '/accounts/me', undefined, saved);
      await start(saved, me);
      return;
    } catch (err) {
      if (!(err instanceof ApiFailure && err.status === 401)) {
        signOut(err instanceof Error ? err.message : String(err));
        return;
      }
    }
  }
  signOut();
}

void init();

// The warm-on-push panel (warm.js) uses the page's helpers.
export { api, guarded, h, say, state, cacheName, formatBytes, formatTime };
