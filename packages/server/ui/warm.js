// The "Warm on push" panel of the Manage view (admins): the warm rules (namespace -> caches), a manual warm,
// and the warm jobs with their progress, refreshed while the panel is shown. It uses the page's helpers
// (app.js) and the server's /api/v0 API: /warm_rules, /content_caches/{id}/warm, /warm_jobs.

import { api, cacheName, formatBytes, formatTime, guarded, h, say, state } from './app.js';

const JOBS_REFRESH_MS = 3000;

/** What the panel knows, besides the page's state (caches). */
const warm = {
  rules: /** @type {{namespace:string,contentCacheUUIDs:string[]}[]} */ ([]),
  jobs: /** @type {any[]} */ ([]),
};

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Loads the rules and the jobs, and draws the panel (called with the rest of the page's data, for admins). */
export async function loadWarm() {
  const [rules, jobs] = await Promise.all([api('GET', '/warm_rules'), api('GET', '/warm_jobs')]);
  warm.rules = rules;
  warm.jobs = jobs;
  renderWarm();
}

/** Binds the panel's forms and the jobs' refresh. */
export function initWarm() {
  $('warm-form').addEventListener('submit', (e) => void setWarmRule(/** @type {SubmitEvent} */ (e)));
  $('warm-now-form').addEventListener('submit', (e) => void warmNow(/** @type {SubmitEvent} */ (e)));
  setInterval(() => {
    if (state.admin && state.tab === 'manage' && document.visibilityState === 'visible') void guarded('warm-status', loadWarmJobs);
  }, JOBS_REFRESH_MS);
}

async function loadWarmJobs() {
  warm.jobs = await api('GET', '/warm_jobs');
  renderWarmJobs();
}

/** The names of caches by id, sorted, for display. */
function names(/** @type {string[]} */ ids) {
  return ids.map((id) => cacheName(id) ?? id).sort().join(', ');
}

function renderWarm() {
  const rows = warm.rules.map((r) =>
    h(
      'div',
      { class: 'row rule-row warm-rule', dataset: { namespace: r.namespace } },
      h(
        'div',
        { class: 'row-main' },
        h('code', {}, r.namespace),
        h('span', { class: 'arrow', 'aria-hidden': 'true' }, '\u2192'),
        h('span', { class: 'name' }, names(r.contentCacheUUIDs)),
      ),
      h('div', { class: 'row-side' }, h('button', { type: 'button', class: 'danger', onclick: () => deleteWarmRule(r.namespace) }, 'Remove')),
    ),
  );
  $('warm-rules').replaceChildren(...(rows.length ? rows : [h('p', { class: 'hint empty' }, 'No warm rule: pushes warm no cache.')]));

  // One checkbox per cache; those checked are the rule's caches.
  const boxes = state.caches.map((c) =>
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'warm-cache', value: c.id }), ` ${c.name}`),
  );
  $('warm-caches').replaceChildren(h('legend', {}, 'Caches'), ...(boxes.length ? boxes : [h('span', { class: 'hint' }, 'Register a cache first.')]));

  const select = /** @type {HTMLSelectElement} */ ($('warm-cache'));
  select.replaceChildren(...state.caches.map((c) => h('option', { value: c.id }, c.name)));
  renderWarmJobs();
}

function renderWarmJobs() {
  const rows = warm.jobs.map((j) => {
    const blobs = j.blobsTotal === null ? 'resolving' : `${j.blobsDone}/${j.blobsTotal} layers`;
    const bytes = j.bytesTotal === null ? '' : `, ${formatBytes(j.bytesDone)} of ${formatBytes(j.bytesTotal)}`;
    const when = j.state === 'retrying' ? `next attempt ${formatTime(j.nextAttemptAt)}` : formatTime(j.finishedAt ?? j.startedAt ?? j.createdAt);
    return h(
      'div',
      { class: 'row warm-job', dataset: { id: j.id, state: j.state } },
      h(
        'div',
        { class: 'row-main' },
        h('code', {}, `${j.repository}@${(j.digest ?? j.reference).slice(0, 19)}`),
        h('span', { class: 'arrow', 'aria-hidden': 'true' }, '\u2192'),
        h('span', { class: 'name' }, j.contentCacheName),
        h('span', { class: `tag warm-${j.state}` }, j.state),
        h('span', { class: 'hint' }, `${blobs}${bytes}; attempt ${j.attempts}; ${when}`),
        j.lastError ? h('span', { class: 'warm-error', title: j.lastError }, j.lastError) : null,
      ),
    );
  });
  $('warm-jobs').replaceChildren(...(rows.length ? rows : [h('p', { class: 'hint empty' }, 'No warm job yet.')]));
}

async function setWarmRule(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const namespace = /** @type {HTMLInputElement} */ (form.elements.namedItem('namespace')).value.trim();
  const ids = [...form.querySelectorAll('input[name="warm-cache"]:checked')].map((b) => /** @type {HTMLInputElement} */ (b).value);
  if (ids.length === 0) {
    say('warm-status', 'Pick at least one cache.', 'error');
    return;
  }
  say('warm-status', 'Saving…', 'busy');
  await guarded('warm-status', async () => {
    const path = namespace.split('/').filter(Boolean).map(encodeURIComponent).join('/');
    const rule = await api('PUT', `/warm_rules/${path}`, { contentCacheUUIDs: ids });
    form.reset();
    await loadWarm();
    say('warm-status', `Pushes under ${rule.namespace} warm ${names(rule.contentCacheUUIDs)}.`, 'ok');
  });
}

async function deleteWarmRule(/** @type {string} */ namespace) {
  say('warm-status', 'Removing…', 'busy');
  await guarded('warm-status', async () => {
    await api('DELETE', `/warm_rules/${namespace.split('/').map(encodeURIComponent).join('/')}`);
    await loadWarm();
    say('warm-status', `Removed the warm rule for ${namespace}.`, 'ok');
  });
}

async function warmNow(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const repository = /** @type {HTMLInputElement} */ (form.elements.namedItem('repository')).value.trim();
  const reference = /** @type {HTMLInputElement} */ (form.elements.namedItem('reference')).value.trim();
  const cacheId = /** @type {HTMLSelectElement} */ (form.elements.namedItem('cache')).value;
  if (!cacheId) {
    say('warm-status', 'Register a cache first.', 'error');
    return;
  }
  say('warm-status', 'Starting…', 'busy');
  await guarded('warm-status', async () => {
    const job = await api('POST', `/content_caches/${cacheId}/warm`, { repository, reference });
    await loadWarmJobs();
    say('warm-status', `Warming ${job.repository}:${job.reference} on ${job.contentCacheName}.`, 'ok');
  });
}
