// Colony's dashboard: plain script, no build step, no third-party code.
// Everything it shows comes from the node's API, asked with the operator's token
// (kept in this tab's session storage, sent in the Authorization header, never in a
// URL); live updates come over the agent bus (`colony.events.>`), whose WebSocket
// carries the token as the subprotocol after `colony.bearer`.
'use strict';

const TOKEN_KEY = 'colony-token';
const LOG_EVENTS_MAX = 500; // decisions kept for the live log
const HISTORY_POINTS_MAX = 900; // per limit, as many as the node keeps
const REFRESH_MIN_MS = 500; // at most this often a view re-reads the API
const POLL_MS = 5000; // re-read even when the bus is quiet
const TASKS_SHOWN_MAX = 200; // rows of the task table
const RECORD_LINKS_MAX = 12; // record links shown per report figure
const ALERTS_SHOWN_MAX = 8; // on the overview
const VIEWS = ['overview', 'governance', 'tasks', 'workers', 'log', 'reports', 'mcp', 'artifacts'];

const app = {
  token: null,
  me: null,
  view: 'overview',
  history: new Map(), // limit name -> [[at_ms, usage], ...]
  lastPointMs: 0,
  events: [], // newest last
  backfilled: false,
  socket: null,
  busRetryMs: 1000,
  refreshing: false,
  refreshAgain: false,
  lastRefresh: 0,
  refreshTimer: null,
  limits: [],
  drawn: {}, // what each part of a view last drew, to skip redrawing the same
};

// ---- small helpers ----

const $ = (selector) => document.querySelector(selector);

/** An element with attributes (`text`, `class`, `dataset`, `style` object, `on*`) and children. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'style') Object.assign(node.style, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function table(node, headings, rows) {
  node.replaceChildren(
    el('thead', {}, el('tr', {}, headings.map((h) => el('th', { text: h })))),
    el('tbody', {}, rows),
  );
}

const pill = (text, look) => el('span', { class: `pill ${look || text}`, text });

function amount(value, unit) {
  if (value === null || value === undefined) return '∞';
  if (unit === 'micro_usd') return `$${(value / 1e6).toFixed(2)}`;
  if (unit === 'bytes') {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = value;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  }
  return value.toLocaleString('en');
}

function since(iso) {
  const ms = Date.now() - Date.parse(iso);
  if (!Number.isFinite(ms)) return iso || '';
  return `${duration(Math.abs(ms))} ${ms >= 0 ? 'ago' : 'from now'}`;
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  const parts = [[Math.floor(s / 86400), 'd'], [Math.floor((s % 86400) / 3600), 'h'],
    [Math.floor((s % 3600) / 60), 'm'], [s % 60, 's']];
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return '0s';
  return parts.slice(first, first + 2).filter(([n]) => n > 0).map(([n, u]) => `${n}${u}`).join(' ');
}

function notice(text, bad) {
  const node = $('#notice');
  node.hidden = !text;
  node.textContent = text || '';
  node.className = bad ? 'notice bad' : 'notice';
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (response.status === 401) {
    signOut(data && data.error ? data.error.message : 'this token is not valid');
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// ---- the token ----

function takeToken() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    // The token leaves the address bar (and the history) at once.
    history.replaceState(null, '', `${location.pathname}#overview`);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  app.token = null;
  if (app.socket) app.socket.close();
  for (const name of VIEWS) $(`#view-${name}`).hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = why || '';
}

function signIn() {
  const token = $('#token-input').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#token-input').value = '';
  start();
}

// ---- views ----

function currentView() {
  const name = location.hash.replace(/^#/, '');
  return VIEWS.includes(name) ? name : 'overview';
}

function show(name) {
  app.view = name;
  for (const view of VIEWS) $(`#view-${view}`).hidden = view !== name;
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.view === name);
  }
  refresh(true);
}

const renderers = {
  overview: renderOverview,
  governance: renderGovernance,
  tasks: renderTasks,
  workers: renderWorkers,
  log: renderLog,
  reports: renderReports,
  mcp: renderMcp,
  artifacts: renderArtifacts,
};

/** Re-reads the current view, at most every REFRESH_MIN_MS, one read at a time. */
function refresh(now) {
  if (!app.token) return;
  if (app.refreshing) { app.refreshAgain = true; return; }
  const wait = now ? 0 : Math.max(0, app.lastRefresh + REFRESH_MIN_MS - Date.now());
  if (wait > 0) {
    if (!app.refreshTimer) {
      app.refreshTimer = setTimeout(() => { app.refreshTimer = null; refresh(true); }, wait);
    }
    return;
  }
  app.refreshing = true;
  app.lastRefresh = Date.now();
  renderers[app.view]()
    .then(() => {
      $('#updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (!$('#notice').classList.contains('bad')) notice('');
    })
    .catch((error) => { if (error.status !== 401) notice(error.message, true); })
    .finally(() => {
      app.refreshing = false;
      if (app.refreshAgain) { app.refreshAgain = false; refresh(false); }
    });
}

// Overview: every limit as a bar with its marks and recent history.

function proximity(limit) {
  if (limit.state === 'blocked' || (limit.hard !== null && limit.usage >= 0.95 * limit.hard)) return 'hard';
  if (limit.soft !== null && limit.usage >= limit.soft) return 'soft';
  if (limit.hard !== null && limit.usage >= 0.8 * limit.hard) return 'near';
  return 'ok';
}

function mergeHistory(series) {
  for (const { name, points } of series) {
    const kept = app.history.get(name) || [];
    for (const point of points) {
      if (!kept.length || point[0] > kept[kept.length - 1][0]) kept.push(point);
      if (point[0] > app.lastPointMs) app.lastPointMs = point[0];
    }
    if (kept.length > HISTORY_POINTS_MAX) kept.splice(0, kept.length - HISTORY_POINTS_MAX);
    app.history.set(name, kept);
  }
}

function chart(limit, scale, nowMs, spanMs) {
  const width = 200;
  const height = 48;
  const points = app.history.get(limit.name) || [];
  const x = (at) => ((at - (nowMs - spanMs)) / spanMs) * width;
  const y = (v) => height - 2 - (Math.min(v, scale) / scale) * (height - 4);
  const line = points.map(([at, v]) => `${x(at).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const marks = [];
  for (const kind of ['soft', 'hard']) {
    if (limit[kind] !== null && limit[kind] <= scale) {
      marks.push(svg('line', { class: kind, x1: 0, x2: width, y1: y(limit[kind]), y2: y(limit[kind]) }));
    }
  }
  return svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `${limit.name} over the last ${duration(spanMs)}` },
  ...marks, svg('polyline', { points: line }));
}

function limitCard(limit, nowMs, spanMs) {
  const peak = Math.max(limit.usage, ...(app.history.get(limit.name) || []).map((p) => p[1]));
  const scale = Math.max(limit.hard !== null ? limit.hard : peak * 1.25, limit.soft || 0, peak, 1);
  const at = (v) => `${Math.min(100, (v / scale) * 100)}%`;
  const marks = ['soft', 'hard']
    .filter((kind) => limit[kind] !== null && limit[kind] <= scale)
    .map((kind) => el('span', { class: `mark ${kind}`, title: `${kind} ${amount(limit[kind], limit.unit)}`, style: { left: at(limit[kind]) } }));
  const window = limit.window_ms ? ` per ${duration(limit.window_ms)}` : '';
  return el('div', { class: `limit ${proximity(limit)}`, dataset: { limit: limit.name, usage: limit.usage, state: limit.state } },
    el('div', {},
      el('span', { class: 'name', text: limit.name }), ' ',
      el('span', { class: 'figures' },
        `${amount(limit.usage, limit.unit)} of ${amount(limit.hard, limit.unit)}${window}`,
        limit.soft !== null ? ` · soft ${amount(limit.soft, limit.unit)}` : '',
        limit.queued ? ` · ${limit.queued} queued` : '', ' ', pill(limit.state)),
      el('div', { class: 'bar', role: 'meter', 'aria-label': limit.name, 'aria-valuenow': limit.usage,
        'aria-valuemin': 0, 'aria-valuemax': scale },
      el('div', { class: 'fill', style: { width: at(limit.usage) } }), marks)),
    chart(limit, scale, nowMs, spanMs),
    el('div', { class: 'desc', text: limit.description }));
}

function card(label, value, sub, key) {
  return el('div', { class: 'card', dataset: { card: key } },
    el('div', { class: 'label', text: label }),
    el('div', { class: 'value', text: value }),
    el('div', { class: 'sub', text: sub || '' }));
}

function renderAlerts(list) {
  const raised = list.raised.map((r) => `${r.principal ? `${r.principal} ` : ''}${r.figure} ${r.threshold}`);
  const more = list.raised_total - list.raised.length;
  $('#alerts-note').textContent = `raised now: ${raised.length ? raised.slice(0, 12).join(', ') : 'nothing'}`
    + (raised.length > 12 || more > 0 ? ` and ${raised.length - Math.min(raised.length, 12) + more} more` : '')
    + ` · ${list.webhooks} webhooks${list.dead_letters ? ` · ${list.dead_letters} dead letters` : ''}`;
  if (!list.alerts.length) {
    $('#alerts').replaceChildren(el('tbody', {}, el('tr', {}, el('td', { class: 'muted', text: 'No alert yet.' }))));
    return;
  }
  table($('#alerts'), ['#', 'when', 'kind', 'figure', 'threshold', 'alert'],
    list.alerts.slice().reverse().map((a) => el('tr', { dataset: { alert: a.id } },
      el('td', { class: 'num', text: a.id }), el('td', { title: a.at, text: since(a.at) }),
      el('td', {}, pill(a.kind, a.kind === 'raise' ? 'warned' : 'allowed')), el('td', { text: a.figure }),
      el('td', { text: a.threshold }), el('td', { text: a.summary }))));
}

async function renderOverview() {
  const query = app.lastPointMs ? `?since_ms=${app.lastPointMs}` : '';
  const [o, alerts] = await Promise.all([api(`/v1/dashboard${query}`), api(`/v1/alerts?limit=${ALERTS_SHOWN_MAX}`)]);
  if (changed('alerts', [alerts.alerts.map((a) => a.id), alerts.raised, alerts.dead_letters])) renderAlerts(alerts);
  app.limits = o.limits;
  mergeHistory(o.history);
  const spend = o.limits.find((l) => l.name === 'llm_spend_usd');
  const t = o.tasks;
  const p = o.principals;
  const c = o.cluster;
  renderDivergence(c);
  const drawCards = changed('cards', [o.tasks, o.queue_depth, o.workers, o.principals, o.proposals_in_review,
    spend && spend.usage, c && [c.connected, c.lag, c.live_nodes, c.divergences]]);
  if (drawCards) $('#cards').replaceChildren(
    card('Queue', amount(o.queue_depth), 'tasks claimable now', 'queue'),
    card('In progress', amount(t.claimed + t.in_progress), `${amount(t.blocked)} blocked`, 'running'),
    card('Completed', amount(t.completed), `${amount(t.failed)} failed · ${amount(t.dead)} dead · ${amount(t.cancelled || 0)} cancelled · ${amount(t.archived || 0)} archived`, 'completed'),
    card('Workers', amount(o.workers.active), `${o.workers.lost} lost · ${o.workers.left} left`, 'workers'),
    card('Principals', amount(p.human + p.ai + p.artifact),
      `${p.human} humans · ${p.ai} AIs · ${p.artifact} artifacts${p.quarantined ? ` · ${p.quarantined} quarantined` : ''}`, 'principals'),
    card('Proposals', amount(o.proposals_in_review), 'in review', 'proposals'),
    spend ? card('LLM spend today', amount(spend.usage, spend.unit),
      `of ${amount(spend.hard, spend.unit)}${spend.soft !== null ? ` (soft ${amount(spend.soft, spend.unit)})` : ''}`, 'spend') : null,
    c ? card('Cluster', `${c.live_nodes} nodes`,
      `this is ${c.node}${c.connected ? '' : ' · NATS lost'} · lag ${amount(c.lag)}${c.divergences ? ` · ${c.divergences} divergence${c.divergences === 1 ? '' : 's'}` : ' · logs agree'}`, 'cluster') : null,
  );
  const spanMs = o.sample_interval_ms * HISTORY_POINTS_MAX;
  $('#limits-note').textContent = `history of the last ${duration(spanMs)}, sampled every ${duration(o.sample_interval_ms)}`;
  // Redrawn only when a figure moved or a sample came: a busy colony decides far
  // more often than its limits change.
  if (changed('limits', [o.limits.map((l) => [l.usage, l.state, l.soft, l.hard, l.queued]), app.lastPointMs])) {
    $('#limits').replaceChildren(...o.limits.map((l) => limitCard(l, o.at_ms, spanMs)));
  }
  $('#seq').textContent = `decision ${o.seq}`;
  $('#nav-artifacts').hidden = o.artifacts === 0;
  markFirst('colony-overview-rendered');
}

/** A cluster whose nodes' logs disagree says so above every view, with the evidence. */
function renderDivergence(cluster) {
  const banner = $('#banner');
  const diverged = Boolean(cluster && cluster.divergences);
  banner.hidden = !diverged;
  banner.textContent = diverged
    ? `DIVERGENCE: ${cluster.divergences} checkpoint${cluster.divergences === 1 ? '' : 's'} of another node disagreed with this node's log. ${cluster.divergence ? `${cluster.divergence}. ` : ''}This must never happen: stop writing, compare the nodes' logs (colony audit verify --head) and see docs/cluster.md.`
    : '';
}

/** Whether `value` differs from what was drawn last under `key` (and remembers it). */
function changed(key, value) {
  const text = JSON.stringify(value);
  if (app.drawn[key] === text) return false;
  app.drawn[key] = text;
  return true;
}

/** Marks the first time something was drawn (the benchmark reads these marks). */
function markFirst(name) {
  if (!performance.getEntriesByName(name).length) performance.mark(name);
}

// Governance: proposals with their tallies, votes by click, the brake, the history.

function describe(proposal) {
  const target = proposal.target || {};
  const value = (change) => (change === 'unlimited' ? 'unlimited' : change && change.set !== undefined ? amount(change.set) : String(change));
  const changes = (fields) => fields.filter(([, c]) => c !== undefined && c !== 'keep').map(([name, c]) => `${name} → ${value(c)}`).join(', ');
  if (target.limit) {
    const t = target.limit;
    return `${proposal.change} ${t.limit}: ${changes([['soft', t.soft], ['hard', t.hard]])}`;
  }
  if (target.quota_default) {
    const t = target.quota_default;
    return `${proposal.change} ${t.kind} ${t.resource}: ${changes([['default', t.amount]])}`;
  }
  return `${proposal.change}: ${JSON.stringify(target)}`;
}

function tallyRows(proposal) {
  const tally = proposal.tally;
  if (!tally) return el('div', { class: 'muted', text: 'no vote needed' });
  return el('div', { class: 'tallies' }, ['human', 'ai'].map((side) => {
    const s = tally[side];
    return [
      el('strong', { text: side === 'ai' ? 'AIs' : 'Humans' }),
      el('span', { dataset: { side, approve: s.approve, reject: s.reject, abstain: s.abstain }, class: 'tally' },
        `${s.approve} approve · ${s.reject} reject · ${s.abstain} abstain (quorum ${s.quorum}${s.quorum_met ? ' met' : ''}, approval ${s.approval}${s.approval_met ? ' met' : ''})`),
    ];
  }));
}

async function vote(id, choice) {
  const why = $('#vote-why').value.trim() || `${choice} from the dashboard`;
  try {
    await api(`/v1/proposals/${id}/votes`, { method: 'POST', body: { vote: choice, justification: why } });
    notice(`Voted ${choice} on proposal ${id}.`);
  } catch (error) {
    notice(`Vote not counted: ${error.message}`, true);
  }
  refresh(true);
}

async function brake() {
  const limit = $('#brake-limit').value;
  const hard = Number($('#brake-hard').value);
  const why = $('#brake-why').value.trim();
  if (!limit || !Number.isSafeInteger(hard) || hard < 0 || !why) {
    notice('A brake needs a limit, a whole new hard value and a justification.', true);
    return;
  }
  try {
    const proposal = await api('/v1/proposals', { method: 'POST', body: { limit, hard, brake: true, justification: why } });
    notice(`Brake applied to ${limit} (proposal ${proposal.id}).`);
  } catch (error) {
    notice(`Brake refused: ${error.message}`, true);
  }
  refresh(true);
}

// A vote counts for its voter's lineage: "1.2" when a root voted itself, "2.3 for
// 1.2" when one of the principals 1.2 spawned cast the lineage's vote.
function lineageOf(vote) {
  return vote.lineage && vote.lineage !== vote.voter ? `${vote.voter} for ${vote.lineage}` : vote.voter;
}

async function renderGovernance() {
  const [open, all, limits] = await Promise.all([
    api('/v1/proposals?state=review'), api('/v1/proposals'), api('/v1/limits'),
  ]);
  const now = Date.now();
  // Redrawn only when they change: a redraw under the pointer would eat a click.
  if (changed('proposals', [open.proposals, Math.floor(now / 60000)])) {
    $('#proposals-open').replaceChildren(...(open.proposals.length ? open.proposals.map((p) =>
      el('div', { class: 'proposal', dataset: { proposal: p.id } },
        el('div', { class: 'change', text: `#${p.id} ${describe(p)}` }),
        el('div', { class: 'muted' }, `by ${p.proposer}${p.automatic ? ' (automatic)' : ''} · `,
          p.brake_expires_at ? `brake lapses in ${duration(Date.parse(p.brake_expires_at) - now)}`
            : `review ends in ${duration(Math.max(0, Date.parse(p.review_ends_at) - now))}`),
        el('div', { text: `“${p.justification}”` }),
        tallyRows(p),
        el('div', { class: 'votes' }, ['approve', 'reject', 'abstain'].map((choice) =>
          el('button', { type: 'button', class: `vote ${choice}`, dataset: { vote: choice, proposal: p.id },
            text: choice[0].toUpperCase() + choice.slice(1), onclick: () => vote(p.id, choice) }))),
        p.votes.length ? el('div', { class: 'muted small' },
          p.votes.map((v) => `${lineageOf(v)} (${v.side}) ${v.vote}`).join(' · ')) : null))
      : [el('p', { class: 'muted', text: 'No proposal is in review.' })]));
  }
  const select = $('#brake-limit');
  if (changed('brake-options', limits.limits.map((l) => [l.name, l.hard]))) {
    const chosen = select.value;
    select.replaceChildren(...limits.limits.map((l) => el('option', { value: l.name, text: `${l.name} (hard ${amount(l.hard, l.unit)})` })));
    if (chosen) select.value = chosen;
  }
  const decided = all.proposals.filter((p) => p.state !== 'review').reverse();
  if (changed('history', decided.map((p) => [p.id, p.state]))) table($('#proposals-history'), ['#', 'change', 'state', 'by', 'decided', 'why', 'votes'],
    decided.map((p) => el('tr', {},
      el('td', { class: 'num', text: p.id }), el('td', { text: describe(p) }),
      el('td', {}, pill(p.state)), el('td', { text: p.proposer }),
      el('td', { title: p.decided_at || '', text: p.decided_at ? since(p.decided_at) : '' }),
      el('td', { text: p.justification }),
      el('td', { text: p.votes.map((v) => `${lineageOf(v)} ${v.vote}`).join(', ') }))));
}

// Tasks: the board and its decomposition tree, with budgets.

function budget(task) {
  if (!task.budget) return '';
  return `${amount(task.budget.spent_micro_usd, 'micro_usd')} spent · ${amount(task.budget.remaining_micro_usd, 'micro_usd')} left`;
}

async function renderTasks() {
  const status = $('#task-status').value;
  const list = await api(`/v1/tasks?limit=${TASKS_SHOWN_MAX}${status ? `&status=${status}` : ''}`);
  const tasks = list.tasks;
  $('#tasks-note').textContent = tasks.length >= TASKS_SHOWN_MAX ? `the first ${TASKS_SHOWN_MAX} shown` : `${tasks.length} tasks`;
  table($('#tasks'), ['address', 'title', 'status', 'priority', 'budget', 'attempts', 'holder', 'by'],
    tasks.map((t) => el('tr', { dataset: { task: t.address } },
      el('td', { text: t.address }), el('td', { text: t.title }), el('td', {}, pill(t.status)),
      el('td', { text: t.priority }), el('td', { text: budget(t) }),
      el('td', { class: 'num', text: `${t.attempt_count}/${t.max_attempts}` }),
      el('td', { text: t.lease ? t.lease.holder : '' }), el('td', { text: t.created_by }))));
  const byParent = new Map();
  const known = new Set(tasks.map((t) => t.address));
  for (const task of tasks) {
    const parent = task.parent && known.has(task.parent) ? task.parent : '';
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(task);
  }
  const branch = (parent, depth) => el('ul', {}, (byParent.get(parent) || []).map((t) =>
    el('li', {}, pill(t.status), ` ${t.address} ${t.title}`, t.budget ? el('span', { class: 'muted', text: ` (${budget(t)})` }) : null,
      depth < 16 && byParent.has(t.address) ? branch(t.address, depth + 1) : null)));
  $('#task-tree').replaceChildren(branch('', 0));
  markFirst('colony-tasks-rendered');
}

// Workers: health, heartbeats and the evidence when lost.

async function renderWorkers() {
  const list = await api('/v1/workers');
  const workers = list.workers || [];
  table($('#workers'), ['worker', 'principal', 'state', 'health', 'capabilities', 'last heartbeat', 'tasks', 'evidence'],
    workers.map((w) => el('tr', {},
      el('td', { class: 'num', text: w.worker }), el('td', { text: w.principal }), el('td', {}, pill(w.state)),
      el('td', {}, pill(w.health)), el('td', { text: w.capabilities.join(', ') }),
      el('td', { title: w.last_heartbeat, text: since(w.last_heartbeat) }),
      el('td', { text: w.tasks.join(', ') }), el('td', { text: w.evidence || '' }))));
}

// The decision log: live over the bus, filterable.

function normalize(record) {
  // A bus event ({seq, at_ms, actor, justification, event}) or an audit record.
  const event = record.event && typeof record.event === 'object' ? record.event : record;
  return {
    seq: record.seq,
    at_ms: record.at_ms,
    actor: record.actor || '',
    action: event.action,
    subject: event.subject,
    decision: event.decision,
    reason: event.reason && event.reason.code !== 'ok' ? (event.reason.message || event.reason.code) : '',
    justification: record.justification || '',
  };
}

function addEvent(record) {
  const event = normalize(record);
  const last = app.events[app.events.length - 1];
  if (last && last.seq === event.seq && last.action === event.action && last.subject === event.subject) return;
  app.events.push(event);
  if (app.events.length > LOG_EVENTS_MAX) app.events.splice(0, app.events.length - LOG_EVENTS_MAX);
}

async function renderLog() {
  if (!app.backfilled) {
    // What happened before the page opened, from the log itself, then merged with
    // what the bus brought since.
    const head = await api('/v1/audit?limit=1');
    const after = Math.max(0, head.last_seq - 100);
    const page = await api(`/v1/audit?after=${after}&limit=100`);
    const live = app.events;
    app.events = [];
    for (const record of page.records) addEvent(record);
    const seen = new Set(app.events.map((e) => `${e.seq}/${e.action}/${e.subject}`));
    app.events.push(...live.filter((e) => !seen.has(`${e.seq}/${e.action}/${e.subject}`)));
    app.events.sort((a, b) => a.seq - b.seq);
    app.backfilled = true;
  }
  const who = $('#log-principal').value.trim();
  const action = $('#log-action').value.trim();
  const decision = $('#log-decision').value;
  const shown = app.events.filter((e) => (!who || e.actor === who || e.subject === who)
    && (!action || (e.action || '').startsWith(action)) && (!decision || e.decision === decision)).reverse();
  $('#log-note').textContent = `${shown.length} of the last ${app.events.length} decisions`;
  table($('#log'), ['seq', 'when', 'actor', 'action', 'subject', 'decision', 'reason', 'justification'],
    shown.map((e) => el('tr', { dataset: { seq: e.seq } },
      el('td', { class: 'num', text: e.seq }), el('td', { text: new Date(e.at_ms).toLocaleTimeString() }),
      el('td', { text: e.actor }), el('td', { text: e.action }), el('td', { text: e.subject }),
      el('td', {}, pill(e.decision)), el('td', { text: e.reason }), el('td', { text: e.justification }))));
}

// Reports: the summary, every figure linked to the records behind it.

async function showRecord(seq) {
  const page = await api(`/v1/audit?after=${seq - 1}&limit=1`);
  const node = $('#report-record');
  node.hidden = false;
  node.textContent = JSON.stringify(page.records[0], null, 2);
}

function links(records) {
  return el('span', { class: 'links' }, records.slice(0, RECORD_LINKS_MAX).map((seq) =>
    el('button', { type: 'button', text: seq, title: `decision record ${seq}`, onclick: () => showRecord(seq) })),
  records.length > RECORD_LINKS_MAX ? `+${records.length - RECORD_LINKS_MAX}` : '');
}

async function renderReports() {
  const r = await api(`/v1/reports/summary?since=${encodeURIComponent($('#report-since').value)}`);
  const figures = Object.entries(r).filter(([, v]) => v && typeof v === 'object' && 'count' in v && 'records' in v);
  const spend = (title, rows) => el('div', {}, el('h2', { text: title }),
    rows.length ? el('table', {}, el('tbody', {}, rows.map((s) => el('tr', {},
      el('td', { text: s.who }), el('td', { class: 'num', text: s.calls }),
      el('td', { class: 'num', text: amount(s.micro_usd, 'micro_usd') }), el('td', {}, links(s.records))))))
      : el('p', { class: 'muted', text: 'none' }));
  $('#report').replaceChildren(
    el('p', {}, `From ${r.since} to ${r.until}: ${r.records} decisions${r.truncated ? ' (truncated)' : ''}, `,
      `${r.llm_calls} LLM calls costing ${amount(r.llm_micro_usd, 'micro_usd')}, ${r.denials} denials.`),
    el('table', {}, el('tbody', {}, figures.map(([name, f]) => el('tr', {},
      el('td', { text: name.replace(/_/g, ' ') }), el('td', { class: 'num', text: f.count }), el('td', {}, links(f.records)))))),
    spend('Spend by principal', r.spend_by_principal || []),
    spend('Spend by model', r.spend_by_model || []),
    el('h2', { text: 'Denials by reason' }),
    el('table', {}, el('tbody', {}, (r.denials_by_reason || []).map((d) => el('tr', {},
      el('td', { text: d.code }), el('td', { text: d.limit || '' }), el('td', { class: 'num', text: d.count }),
      el('td', {}, links(d.records)))))));
}

// MCP: what MCP clients hold open now, tool calls waiting for a person (approve
// or deny here), the upstream servers, and the day's tool calls.

async function decideToolCall(id, verdict) {
  const why = $('#mcp-why').value.trim();
  if (!why) { notice('Say why first: the justification is recorded with your decision.', true); return; }
  try {
    await api(`/v1/grants/${id}/${verdict}`, { method: 'POST', body: { justification: why } });
    notice(`Tool call request ${id}: ${verdict === 'approve' ? 'approved' : 'denied'}.`);
  } catch (error) {
    notice(error.message, true);
  }
  refresh(true);
}

async function renderMcp() {
  const [o, pending, report] = await Promise.all([
    api('/v1/dashboard?since_ms=' + Date.now()),
    api('/v1/grants?state=pending'),
    api('/v1/reports/summary?since=24h'),
  ]);
  const m = o.mcp;
  $('#mcp-cards').replaceChildren(
    card('Tool calls in flight', m.tool_calls_in_flight, 'being answered now', 'mcp-in-flight'),
    card('Waiting for a person', m.waiting_for_approval, 'upstream calls held open', 'mcp-waiting'),
    card('Subscriptions', m.subscriptions, 'open subscriptions/listen streams', 'mcp-subscriptions'),
    card('Decisions over MCP', report.mcp_calls.count, 'in the last 24 hours', 'mcp-decisions'));
  const calls = pending.grants.filter((g) => g.kind === 'tool_call');
  table($('#mcp-approvals'), ['request', 'tool', 'caller', 'justification', 'expires', ''],
    calls.map((g) => el('tr', { dataset: { grant: g.id } },
      el('td', { class: 'num', text: g.id }), el('td', { text: g.tool || '' }),
      el('td', { text: g.requester }), el('td', { text: g.justification }),
      el('td', { text: g.expires_at ? since(g.expires_at) : '' }),
      el('td', {},
        el('button', { type: 'button', class: 'approve', text: 'Approve', onclick: () => decideToolCall(g.id, 'approve') }),
        el('button', { type: 'button', class: 'danger deny', text: 'Deny', onclick: () => decideToolCall(g.id, 'deny') })))));
  table($('#mcp-servers'), ['server', 'state', 'tools', 'calls in flight', 'why down'],
    m.servers.map((s) => el('tr', {},
      el('td', { text: s.name }), el('td', {}, pill(s.up ? 'up' : 'down', s.up ? 'allowed' : 'denied')),
      el('td', { class: 'num', text: s.tools }), el('td', { class: 'num', text: s.calls_in_flight }),
      el('td', { text: s.down_because || '' }))));
  table($('#mcp-subscribers'), ['principal', 'subscriptions'],
    m.subscribers.map((s) => el('tr', {},
      el('td', { text: s.principal }), el('td', { class: 'num', text: s.subscriptions }))));
  $('#mcp-calls-note').textContent = `${report.tool_calls.length} tools by principal`;
  table($('#mcp-calls'), ['tool', 'principal', 'calls', 'failed', 'records'],
    report.tool_calls.map((t) => el('tr', {},
      el('td', { text: t.tool }), el('td', { text: t.who }), el('td', { class: 'num', text: t.calls }),
      el('td', { class: 'num', text: t.failed }), el('td', {}, links(t.records)))));
}

// Artifacts.

async function renderArtifacts() {
  const list = await api('/v1/artifacts');
  table($('#artifacts'), ['address', 'name', 'state', 'deployer', 'compute', 'host calls', 'last error'],
    list.artifacts.map((a) => el('tr', {},
      el('td', { text: a.address }), el('td', { text: a.name }), el('td', {}, pill(a.state)),
      el('td', { text: a.deployer }), el('td', { class: 'num', text: `${amount(a.usage.compute_ms || 0)} ms` }),
      el('td', { class: 'num', text: amount(a.usage.host_calls || 0) }), el('td', { text: a.last_error || '' }))));
}

// ---- live updates over the bus ----

function setLive(on) {
  const node = $('#live');
  node.className = `live ${on ? 'on' : 'off'}`;
  node.textContent = on ? 'live' : 'offline';
}

function connectBus() {
  if (!app.token) return;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  let socket;
  try {
    socket = new WebSocket(`${scheme}://${location.host}/v1/bus`, ['colony.bearer', app.token]);
  } catch (error) {
    notice(`The live feed cannot start: ${error.message}`, true);
    return;
  }
  app.socket = socket;
  socket.onopen = () => {
    app.busRetryMs = 1000;
    socket.send(JSON.stringify({ op: 'sub', sid: 'events', subject: 'colony.events.>', id: 1 }));
    setLive(true);
  };
  socket.onmessage = (message) => {
    let frame;
    try { frame = JSON.parse(message.data); } catch (_) { return; }
    if (frame.op === 'msg' && frame.sid === 'events' && frame.data && frame.data.event) {
      addEvent(frame.data);
      if (app.view !== 'reports') refresh(false);
    } else if (frame.op === 'err') {
      notice(`The live feed: ${frame.error.message}`, true);
    }
  };
  socket.onclose = () => {
    setLive(false);
    if (app.socket === socket && app.token) {
      setTimeout(connectBus, app.busRetryMs);
      app.busRetryMs = Math.min(app.busRetryMs * 2, 30000);
    }
  };
}

// ---- start ----

async function start() {
  app.token = takeToken();
  if (!app.token) { signOut(''); return; }
  $('#login').hidden = true;
  try {
    const me = await api('/v1/ledger/me');
    app.me = me.principal;
    $('#whoami').textContent = app.me ? `signed in as ${app.me}` : '';
  } catch (error) {
    if (error.status === 401) return;
  }
  show(currentView());
  connectBus();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#token-save').addEventListener('click', signIn);
  $('#token-input').addEventListener('keydown', (e) => { if (e.key === 'Enter') signIn(); });
  $('#brake-apply').addEventListener('click', brake);
  $('#task-status').addEventListener('change', () => refresh(true));
  for (const id of ['#log-principal', '#log-action', '#log-decision']) {
    $(id).addEventListener('input', () => refresh(true));
  }
  $('#report-since').addEventListener('change', () => refresh(true));
  window.addEventListener('hashchange', () => {
    if (/^#token=/.test(location.hash)) start();
    else if (app.token) show(currentView());
  });
  setInterval(() => refresh(false), POLL_MS);
  start();
});
