// The demo page: plain DOM code, no build step, no inline scripts (the CSP forbids them).
const $ = (id) => document.getElementById(id);
const text = (id, value) => {
  $(id).textContent = value;
};
const showError = (message) => text('error', message || '');

async function call(method, url, body, headers = {}) {
  const started = performance.now();
  const res = await fetch(url, {
    method,
    headers: body === undefined ? headers : { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const ms = Math.round(performance.now() - started);
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json() : await res.text();
  return { res, data, ms };
}

// Response cache
$('cache-load').addEventListener('click', async () => {
  const { res, data, ms } = await call('GET', `/api/products/${$('cache-id').value}`);
  const status = res.headers.get('x-cache') || '–';
  text('cache-status', status);
  $('cache-status').className = `badge ${status}`;
  text('cache-latency', `${ms} ms`);
  text('cache-age', res.headers.get('age') ?? '–');
  text('cache-built', data.builtAt ?? '–');
});
$('cache-update').addEventListener('click', async () => {
  const price = Math.round(Math.random() * 10000) / 100;
  const { res, data } = await call('PUT', `/api/products/${$('cache-id').value}`, { price });
  showError(res.ok ? '' : data.detail);
  if (res.ok) text('cache-status', 'invalidated');
});
$('report-load').addEventListener('click', async () => {
  text('report-result', 'building…');
  const { data } = await call('GET', '/api/reports/2026');
  text('report-result', `total ${data.total} orders, served in ${data.servedInMs} ms`);
});

// Rate limiting
let countdownTimer;
$('hammer').addEventListener('click', async () => {
  let ok = 0;
  let denied = 0;
  let retryAfter = 0;
  for (let i = 0; i < 15; i++) {
    const { res } = await call('GET', '/api/ping');
    if (res.status === 429) {
      denied++;
      retryAfter = Number(res.headers.get('retry-after') || 0);
    } else if (res.ok) ok++;
    text('hammer-header', res.headers.get('ratelimit') || '–');
    text('hammer-policy', res.headers.get('ratelimit-policy') || '–');
  }
  text('hammer-ok', String(ok));
  text('hammer-denied', String(denied));
  clearInterval(countdownTimer);
  if (retryAfter > 0) {
    let left = retryAfter;
    text('countdown', `${left} s`);
    countdownTimer = setInterval(() => {
      left--;
      text('countdown', left > 0 ? `${left} s` : 'ready');
      if (left <= 0) clearInterval(countdownTimer);
    }, 1000);
  } else text('countdown', 'ready');
});

// Sessions
async function refreshMe() {
  const { res, data } = await call('GET', '/api/me');
  text('me', res.ok ? data.userId : 'nobody');
  const list = $('sessions');
  list.replaceChildren();
  if (!res.ok) return;
  const sessions = await call('GET', '/api/sessions');
  for (const s of sessions.data.sessions || []) {
    const li = document.createElement('li');
    li.textContent = `${s.current ? '▶ this device' : 'other device'} · ${s.userAgent} · last seen ${new Date(s.lastSeenAt).toLocaleTimeString()}`;
    list.append(li);
  }
}
$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const { res, data } = await call('POST', '/api/login', {
    username: $('login-user').value,
    password: $('login-pass').value,
  });
  showError(res.ok ? '' : data.detail);
  await refreshMe();
});
$('logout').addEventListener('click', async () => {
  await call('POST', '/api/logout');
  await refreshMe();
});
$('logout-all').addEventListener('click', async () => {
  const { res, data } = await call('POST', '/api/logout-all');
  showError(res.ok ? '' : data.detail);
  await refreshMe();
});

// Idempotent orders
let lastOrder;
/** 128 random bits as hex: crypto.randomUUID() exists only on https or localhost, not by a LAN address. */
function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join(
    '',
  );
}
async function sendOrder(order) {
  const { res, data } = await call('POST', '/api/orders', order.body, { 'Idempotency-Key': order.key });
  text('order-status', String(res.status));
  text('order-id', data.id ?? data.detail ?? '–');
  text('order-replayed', res.headers.get('idempotent-replayed') || 'no');
  showError(res.ok ? '' : data.detail);
}
$('order-place').addEventListener('click', async () => {
  lastOrder = { key: newKey(), body: { item: 'Burr grinder', quantity: 1 } };
  await sendOrder(lastOrder);
});
$('order-repeat').addEventListener('click', async () => {
  if (!lastOrder) return showError('Place an order first.');
  await sendOrder(lastOrder);
});

// Live events
const feed = new EventSource('/api/events');
feed.addEventListener('message', (event) => {
  const payload = JSON.parse(event.data);
  const li = document.createElement('li');
  li.textContent = `${payload.type}: ${payload.order?.item ?? ''} ×${payload.order?.quantity ?? ''}`;
  $('events').prepend(li);
});
feed.addEventListener('open', () => document.body.setAttribute('data-live', 'yes'));

// Leaderboard
async function refreshBoard() {
  const { data } = await call('GET', '/api/leaderboard');
  const list = $('lb-list');
  list.replaceChildren();
  for (const row of data.top || []) {
    const li = document.createElement('li');
    li.textContent = `${row.player}: ${row.score}`;
    list.append(li);
  }
}
$('lb-add').addEventListener('click', async () => {
  const { res, data } = await call('POST', `/api/leaderboard/${encodeURIComponent($('lb-player').value)}`, {
    points: 10,
  });
  showError(res.ok ? '' : data.detail);
  await refreshBoard();
});

refreshMe();
refreshBoard();
