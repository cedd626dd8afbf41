import { createHash } from 'node:crypto';
import express from 'express';
import { type Redis, ReplyError } from 'ioredis';
import { type KitEvent, onKitEvent } from '../../lib/events';
import { redisSession } from '../../lib/session';
import { DESTROY, LOAD, SAVE, sessionKey, userIndexKey } from '../../lib/session/scripts';
import { useRedisServer } from '../helpers/redis';
import { postWithSlowBody } from '../helpers/slow-body';
import { useTcpProxy } from '../helpers/tcp-proxy';
import { useServers } from '../idempotency/http';

// Races of one user's sessions found by a review: logins against lost replies and logoutAll(), a slow
// request against a login in another tab, the per-user cap against expired entries. Each runs over
// HTTP against a real redis-server; a TCP proxy in front of it stands in for a flaky or slow network.

const SECRET = 'races-test-secret-races-test-secret-0001';
const redisServer = useRedisServer();
const servers = useServers();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const proxy = useTcpProxy(() => redisServer.server.port);

/** A cookie jar for one browser (all its tabs). */
class Browser {
  cookies = new Map<string, string>();
  get header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  async fetch(url: string, init: RequestInit = {}) {
    const res = await fetch(url, { ...init, headers: { ...init.headers, cookie: this.header } });
    for (const cookie of res.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const at = pair!.indexOf('=');
      const [name, value] = [pair!.slice(0, at), pair!.slice(at + 1)];
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(cookie)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return res;
  }
  async json(url: string, init: RequestInit = {}) {
    return (await this.fetch(url, init)).json() as Promise<Record<string, unknown>>;
  }
}

/** What the next `GET /wait` waits for before it answers. */
const waiting: Array<() => Promise<void>> = [];

/** Makes the next session write on `redis` leave `ms` late (the script must have been used on it). */
function delayNextSave(redis: Redis, ms: number) {
  const client = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const save = client.erk_session_save_v4!;
  let delay = true;
  client.erk_session_save_v4 = function (this: unknown, ...args: unknown[]) {
    if (!delay) return save.apply(this, args);
    delay = false;
    return sleep(ms).then(() => save.apply(this, args));
  };
}

/** Holds the next `/wait` (or `/login-then-wait`) in its handler: `entered` once there, until `release()`. */
function holdNextWait() {
  let release!: () => void;
  let inHandler!: () => void;
  const entered = new Promise<void>((resolve) => {
    inHandler = resolve;
  });
  waiting.push(() => {
    inHandler();
    return new Promise<void>((resolve) => {
      release = resolve;
    });
  });
  return { entered, release: () => release() };
}

function app(
  redis: Redis,
  extra: Partial<Parameters<typeof redisSession>[0]> = {},
  { handleErrors = true } = {},
) {
  const sessions = redisSession({ redis, secret: SECRET, ...extra });
  const server = express();
  server.use(express.json());
  server.use(sessions);
  server.post('/login', async (req, res) => {
    await sessions.login(req, { userId: String(req.query.user ?? 'u') });
    res.json({ id: sessions.idOf(req) });
  });
  server.post('/cart', (req, res) => {
    (req.session as unknown as { cart: string[] }).cart = ['book'];
    res.json({});
  });
  server.get('/slow', async (req, res) => {
    await sleep(400);
    res.json({ user: req.session?.userId ?? null });
  });
  server.get('/me', (req, res) => {
    res.json({ user: req.session?.userId ?? null });
  });
  server.post('/logout', async (req, res) => {
    await sessions.logout(req, res);
    res.json({});
  });
  server.post('/logout-all', async (req, res) => {
    res.json({ ended: await sessions.logoutAll(String(req.session?.userId)) });
  });
  server.post('/login-then-wait', async (req, res) => {
    await sessions.login(req, { userId: String(req.query.user ?? 'u') });
    await waiting.shift()?.();
    res.json({ id: sessions.idOf(req) });
  });
  server.get('/wait', async (req, res) => {
    await waiting.shift()?.();
    res.json({ user: req.session?.userId ?? null });
  });
  if (handleErrors) server.use(sessions.handleErrors);
  return { sessions, server };
}

describe('redisSession races', () => {
  it('a login whose write reply was lost (ioredis sends it again) is still listed, and logoutAll() ends it', async () => {
    const sha = createHash('sha1').update(SAVE.lua).digest('hex');
    let armed = false;
    let fired = false;
    const redis = await proxy({
      dropAfter: (chunk) => {
        // EVALSHA, or the EVAL that loads the script the first time.
        if (!armed || fired || !(chunk.includes(sha) || chunk.includes(SAVE.lua.slice(0, 60)))) return false;
        fired = true;
        return true;
      },
    });
    await redis.ping();
    const { sessions, server } = app(redis, { timeout: 3000 });
    const url = await servers.listen(server);
    const browser = new Browser();
    armed = true;
    expect((await browser.fetch(`${url}/login?user=frank`, { method: 'POST' })).status).toBe(200);
    expect(fired).toBe(true);
    expect(await browser.json(`${url}/me`)).toEqual({ user: 'frank' });
    expect(await sessions.list('frank')).toHaveLength(1);
    expect(await sessions.logoutAll('frank')).toBe(1);
    expect(await browser.json(`${url}/me`)).toEqual({ user: null });
  });

  it('a read that claimed the index refresh, run twice (its reply lost), still refreshes the index: logoutAll() ends the session', async () => {
    const sha = createHash('sha1').update(LOAD.lua).digest('hex');
    let armed = false;
    let fired = false;
    const redis = await proxy({
      dropAfter: (chunk) => {
        if (!armed || fired || !(chunk.includes(sha) || chunk.includes(LOAD.lua.slice(0, 60)))) return false;
        fired = true;
        return true;
      },
    });
    // ttl 2 s: the index entry is written for 4 s, and refreshed once it would end before the session.
    const { sessions, server } = app(redis, { timeout: 3000, ttl: 2000 });
    const url = await servers.listen(server);
    const browser = new Browser();
    const started = performance.now();
    const at = (ms: number) => sleep(ms - (performance.now() - started));
    expect((await browser.fetch(`${url}/login?user=ivy`, { method: 'POST' })).status).toBe(200);
    await at(1500);
    expect(await browser.json(`${url}/me`)).toEqual({ user: 'ivy' });
    // The index entry (till 4 s) would end before the session (till 4.3 s): this read claims its
    // refresh, and its reply is lost.
    await at(2300);
    armed = true;
    expect(await browser.json(`${url}/me`)).toEqual({ user: 'ivy' });
    expect(fired).toBe(true);
    await at(3800);
    expect(await browser.json(`${url}/me`)).toEqual({ user: 'ivy' });
    // Past the first index entry's end: only the refresh can still list the session.
    await at(4300);
    expect(await sessions.list('ivy')).toHaveLength(1);
    expect(await sessions.logoutAll('ivy')).toBe(1);
    expect(await browser.json(`${url}/me`)).toEqual({ user: null });
  });

  it.each(['revoke', 'logoutAll'] as const)(
    '%s whose end Redis ran twice (its reply lost) still reports the session it ended',
    async (how) => {
      const sha = createHash('sha1').update(DESTROY.lua).digest('hex');
      let armed = false;
      let fired = false;
      const redis = await proxy({
        dropAfter: (chunk) => {
          if (!armed || fired || !(chunk.includes(sha) || chunk.includes(DESTROY.lua.slice(0, 60))))
            return false;
          fired = true;
          return true;
        },
      });
      const { sessions, server } = app(redis, { timeout: 3000 });
      const url = await servers.listen(server);
      const browser = new Browser();
      expect((await browser.fetch(`${url}/login?user=jo`, { method: 'POST' })).status).toBe(200);
      const [listed] = await sessions.list('jo');
      armed = true;
      const result =
        how === 'revoke' ? await sessions.revoke('jo', listed!.id) : await sessions.logoutAll('jo');
      expect({ fired, result, after: await browser.json(`${url}/me`) }).toEqual({
        fired: true,
        result: how === 'revoke' ? true : 1,
        after: { user: null },
      });
    },
  );

  it('a logoutAll() on another instance while a login is still saving ends that new session too', async () => {
    const slow = await proxy({ delayMs: 300 });
    await slow.ping();
    const a = app(slow, { timeout: 5000 });
    const b = app(redisServer.client() as Redis);
    const [urlA, urlB] = [await servers.listen(a.server), await servers.listen(b.server)];
    const admin = redisServer.plain();
    /** Whether a live session of carol is in Redis right now. */
    const carolInRedis = async () => {
      for (const key of await admin.keys('erk:sess:{*')) {
        if ((await admin.hget(key, 'u')) === 'carol' && !(await admin.hexists(key, 'x'))) return true;
      }
      return false;
    };
    let existedBefore = 0;
    for (const into of [100, 400, 500, 700]) {
      const browser = new Browser();
      const login = browser.fetch(`${urlA}/login?user=carol`, { method: 'POST' });
      await sleep(into);
      const existed = await carolInRedis();
      if (existed) existedBefore++;
      await b.sessions.logoutAll('carol');
      await login;
      const me = await browser.json(`${urlB}/me`);
      // A session that was in Redis when logoutAll() ran is ended; one that came later is listed.
      if (existed) expect([into, me.user]).toEqual([into, null]);
      else if (me.user === 'carol') expect((await b.sessions.list('carol')).length).toBe(1);
      await b.sessions.logoutAll('carol');
      expect(await browser.json(`${urlB}/me`)).toEqual({ user: null });
    }
    expect(existedBefore).toBeGreaterThan(0); // the race was really run
  });

  it.each(['an anonymous cart session', 'a logged-in session'])(
    'a slow request that read %s does not put its cookie back after a login in another tab ended it',
    async (start) => {
      const { server } = app(redisServer.client() as Redis);
      const url = await servers.listen(server);
      const browser = new Browser();
      if (start.includes('anonymous')) await browser.fetch(`${url}/cart`, { method: 'POST' });
      else await browser.fetch(`${url}/login?user=alice`, { method: 'POST' });
      const tabA = browser.fetch(`${url}/slow`);
      await sleep(100);
      await browser.fetch(`${url}/login?user=bob`, { method: 'POST' });
      const slow = await tabA;
      expect(slow.headers.getSetCookie()).toEqual([]);
      expect(await browser.json(`${url}/me`)).toEqual({ user: 'bob' });
    },
  );

  it.each([
    ['handleErrors', true],
    ["Express's own error handler", false],
  ])(
    'a login whose new session a logoutAll() ends before it is written rejects: 409 from %s, no cookie',
    async (_, handleErrors) => {
      const redis = redisServer.client() as Redis;
      const { sessions, server } = app(redis, {}, { handleErrors });
      const url = await servers.listen(server);
      // The first login defines the kit's scripts on the client.
      expect((await new Browser().fetch(`${url}/login?user=dora`, { method: 'POST' })).status).toBe(200);
      // The next login's write waits for a logoutAll() elsewhere, which finds it listed already.
      const client = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      const save = client[SAVE.name]!;
      client[SAVE.name] = async function (this: unknown, ...args: unknown[]) {
        client[SAVE.name] = save;
        await sessions.logoutAll('dora');
        return save.apply(this, args);
      };
      const browser = new Browser();
      const answer = await browser.fetch(`${url}/login?user=dora`, { method: 'POST' });

      expect(answer.status).toBe(409);
      if (handleErrors)
        expect(answer.headers.get('content-type')).toBe('application/problem+json; charset=utf-8');
      expect(browser.cookies.size).toBe(0);
      expect(await sessions.list('dora')).toEqual([]);
    },
  );

  it('logoutAll() of the current user answers without the cookie of the session it just ended', async () => {
    const { server } = app(redisServer.client() as Redis);
    const url = await servers.listen(server);
    const browser = new Browser();
    await browser.fetch(`${url}/login?user=dana`, { method: 'POST' });
    const before = browser.cookies.get('sid');
    const res = await browser.fetch(`${url}/logout-all`, { method: 'POST' });
    expect(await res.json()).toEqual({ ended: 1 });
    expect(res.headers.getSetCookie()).toEqual([]);
    expect(browser.cookies.get('sid')).toBe(before);
    expect(await browser.json(`${url}/me`)).toEqual({ user: null });
  });

  it("a handler's own save() of a session ended meanwhile keeps req.session for its callback (passport's logout regenerates there)", async () => {
    const { sessions, server } = app(redisServer.client() as Redis);
    // "Log out everywhere" in passport's way: logoutAll() ends this session too, then req.logout()
    // changes the session, saves it, and regenerates it inside the save's callback.
    server.post('/everywhere', async (req, res, next) => {
      await sessions.logoutAll(String(req.session.userId));
      (req.session as unknown as { note: string }).note = 'changed';
      req.session.save((error) => {
        if (error) return next(error);
        try {
          req.session.regenerate((e) => (e ? next(e) : res.json({ note: 'regenerated' })));
        } catch (thrown) {
          // Before the fix req.session was gone here: a TypeError outside any handler killed the process.
          next(thrown);
        }
      });
    });
    const url = await servers.listen(server);
    const browser = new Browser();
    await browser.fetch(`${url}/login?user=gale`, { method: 'POST' });
    const other = new Browser();
    await other.fetch(`${url}/login?user=gale`, { method: 'POST' });
    const res = await browser.fetch(`${url}/everywhere`, { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ note: 'regenerated' });
    expect(await browser.json(`${url}/me`)).toEqual({ user: null });
    expect(await other.json(`${url}/me`)).toEqual({ user: null });
    expect(await sessions.list('gale')).toEqual([]);
  });

  it('a change to a session ended meanwhile, saved by the handler, is not written and sends no cookie', async () => {
    const redis = redisServer.client() as Redis;
    const { sessions, server } = app(redis, { prefix: 'dropped:' });
    server.post('/save-after-end', async (req, res) => {
      await sessions.logoutAll(String(req.session.userId));
      (req.session as unknown as { cart: string[] }).cart = ['late'];
      req.session.save(() => res.json({ cart: (req.session as unknown as { cart: string[] }).cart }));
    });
    const url = await servers.listen(server);
    const browser = new Browser();
    await browser.fetch(`${url}/login?user=hal`, { method: 'POST' });
    // Before the fix the callback found no req.session, threw, and the request never got an answer.
    const res = await browser.fetch(`${url}/save-after-end`, {
      method: 'POST',
      signal: AbortSignal.timeout(5000),
    });
    expect(await res.json()).toEqual({ cart: ['late'] });
    expect(res.headers.getSetCookie()).toEqual([]);
    expect(await browser.json(`${url}/me`)).toEqual({ user: null });
    // Only tombstones: the ended session did not come back, and no session was made for the change.
    const keys = await redis.keys('dropped:sess:{*');
    // (The login left one too, for the anonymous session it replaced.)
    expect(keys.length).toBeGreaterThan(0);
    // A tombstone: `x`, and the token and owner of the call that left it (xt, xu), no session fields.
    for (const key of keys) {
      const { x, xt: _token, xu: _owner, ...session } = await redis.hgetall(key);
      expect({ x, session }).toEqual({ x: '1', session: {} });
    }
  });

  it.each(['a login', 'a logout'])(
    'a fast request does not put its cookie back after %s in another tab (same instance) ended its session',
    async (other) => {
      const { server } = app(redisServer.client() as Redis);
      const url = await servers.listen(server);
      const browser = new Browser();
      await browser.fetch(`${url}/login?user=erin`, { method: 'POST' });
      // Tab A's request has read its session; tab B's login or logout ends it before A answers,
      // well within the 200 ms after which every re-sent cookie is checked in Redis.
      let started!: () => void;
      const inHandler = new Promise<void>((resolve) => {
        started = resolve;
      });
      let release!: () => void;
      waiting.push(() => {
        started();
        return new Promise<void>((resolve) => {
          release = resolve;
        });
      });
      const tabA = browser.fetch(`${url}/wait`);
      await inHandler;
      const tabB = new Browser();
      tabB.cookies = new Map(browser.cookies);
      if (other === 'a login') await tabB.fetch(`${url}/login?user=frank`, { method: 'POST' });
      else await tabB.fetch(`${url}/logout`, { method: 'POST' });
      release();
      const a = await tabA;
      expect(a.headers.getSetCookie()).toEqual([]);
      expect(await a.json()).toEqual({ user: 'erin' });
    },
  );

  it.each(['another login past the cap', 'list()'])(
    'a login whose write is still on its way stays listed when %s looks at the index meanwhile',
    async (meanwhile) => {
      const redis = redisServer.client() as Redis;
      const { sessions, server } = app(redis, { maxSessionsPerUser: 2, prefix: `wip${meanwhile.length}:` });
      const url = await servers.listen(server);
      const [b1, b2, b3, b4] = [new Browser(), new Browser(), new Browser(), new Browser()];
      await b1.fetch(`${url}/login?user=u1`, { method: 'POST' });
      if (meanwhile !== 'list()') await b2.fetch(`${url}/login?user=u1`, { method: 'POST' });
      // b3's login lists its session, then its write takes 300 ms to leave (a slow network).
      delayNextSave(redis, 300);
      const login = b3.fetch(`${url}/login?user=u1`, { method: 'POST' });
      await sleep(100);
      if (meanwhile === 'list()') await sessions.list('u1');
      else await b4.fetch(`${url}/login?user=u1`, { method: 'POST' });
      await login;
      expect(await b3.json(`${url}/me`)).toEqual({ user: 'u1' });
      await sessions.logoutAll('u1');
      for (const browser of [b1, b2, b3, b4]) expect(await browser.json(`${url}/me`)).toEqual({ user: null });
    },
  );

  it('a login that listed its session first but wrote it last still applies maxSessionsPerUser: it ends the other', async () => {
    const redis = redisServer.client() as Redis;
    const { sessions, server } = app(redis, { maxSessionsPerUser: 1, prefix: 'gate:' });
    const url = await servers.listen(server);
    const [first, second] = [new Browser(), new Browser()];
    // The kit defines its scripts on a client at their first use: before replacing one, use it.
    await new Browser().fetch(`${url}/login?user=warm-up`, { method: 'POST' });
    // first's login lists its session, then its write takes 300 ms to leave (a slow network).
    delayNextSave(redis, 300);
    const slow = first.fetch(`${url}/login?user=u1`, { method: 'POST' });
    await sleep(100);
    // Listed second, written first: it found first's session listed but not written.
    await second.fetch(`${url}/login?user=u1`, { method: 'POST' });
    await slow;
    expect(await first.json(`${url}/me`)).toEqual({ user: 'u1' });
    expect(await second.json(`${url}/me`)).toEqual({ user: null });
    expect(await sessions.list('u1')).toHaveLength(1);
  });

  it('a login that a later one ended by maxSessionsPerUser before its answer went out sends no cookie, so the browser keeps the later one', async () => {
    const { sessions, server } = app(redisServer.client() as Redis, {
      maxSessionsPerUser: 1,
      prefix: 'dbl:',
    });
    const url = await servers.listen(server);
    const browser = new Browser();
    const { entered, release } = holdNextWait();
    // A double-submitted login form: the first answer is the last to arrive.
    const first = browser.fetch(`${url}/login-then-wait?user=u1`, { method: 'POST' });
    await entered;
    const second = await browser.fetch(`${url}/login?user=u1`, { method: 'POST' });
    expect(second.headers.getSetCookie()).toHaveLength(1);
    release();
    expect((await first).headers.getSetCookie()).toEqual([]);
    expect(await browser.json(`${url}/me`)).toEqual({ user: 'u1' });
    expect(await sessions.list('u1')).toHaveLength(1);
  });

  it("a login whose end by a later login's cap Redis refused still sends its cookie: it lives on", async () => {
    const redis = redisServer.client() as Redis;
    const { sessions, server } = app(redis, { maxSessionsPerUser: 1, prefix: 'refused-cap:' });
    const url = await servers.listen(server);
    await new Browser().fetch(`${url}/login?user=warm-up`, { method: 'POST' });
    await new Browser().fetch(`${url}/login?user=warm-up`, { method: 'POST' }); // warms the cap's DESTROY
    const client = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const destroy = client.erk_session_destroy_v5!;
    client.erk_session_destroy_v5 = function (this: unknown, ...args: unknown[]) {
      // The cap's ends (they name the user): refused, as by an ACL.
      if (args[2]) return Promise.reject(new ReplyError('NOPERM this user has no permissions'));
      return destroy.apply(this, args);
    };
    const [first, second] = [new Browser(), new Browser()];
    const { entered, release } = holdNextWait();
    const held = first.fetch(`${url}/login-then-wait?user=u1`, { method: 'POST' });
    await entered;
    await second.fetch(`${url}/login?user=u1`, { method: 'POST' });
    release();
    expect((await held).headers.getSetCookie()).toHaveLength(1);
    expect(await first.json(`${url}/me`)).toEqual({ user: 'u1' });
    expect(await sessions.list('u1')).toHaveLength(2);
  });

  it('a slow request whose session cannot be checked (Redis paused) still gets its answer, without a cookie', async () => {
    const { server } = app(redisServer.client() as Redis, { timeout: 300 });
    const atFinish: unknown[] = [];
    server.get('/slow-logged', async (req, res) => {
      res.on('finish', () => atFinish.push(req.session?.userId));
      await sleep(400);
      res.json({ user: req.session?.userId ?? null });
    });
    const url = await servers.listen(server);
    const browser = new Browser();
    await browser.fetch(`${url}/login?user=p`, { method: 'POST' });
    const slow = browser.fetch(`${url}/slow-logged`);
    await sleep(250);
    await redisServer.plain().call('CLIENT', 'PAUSE', '1000', 'ALL');
    const res = await slow;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ user: 'p' });
    expect(res.headers.getSetCookie()).toEqual([]);
    // The request keeps its session for whoever looks after the answer (a request logger).
    expect(atFinish).toEqual(['p']);
    await sleep(900);
    expect(await browser.json(`${url}/me`)).toEqual({ user: 'p' });
  });

  it('a handler that answers, then throws while its body still arrives, keeps its answer and the process', async () => {
    const { server } = app(redisServer.client() as Redis);
    server.post('/order', (req, res) => {
      (req.session as unknown as { last: string }).last = 'order';
      res.status(201).json({ created: true });
      throw new Error('a bug after answering');
    });
    const url = new URL(await servers.listen(server));
    const browser = new Browser();
    await browser.fetch(`${url.origin}/login?user=t`, { method: 'POST' });
    // Express's final handler waits for the rest of the body, then sets its headers: by then the
    // answer held for the session save has gone out.
    const head = await postWithSlowBody(url, '/order', { Cookie: browser.header }, 300, 700);
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 201 Created');
    expect(head).toContain('{"created":true}');
    expect(head).not.toContain('a bug after answering');
    expect(await browser.json(`${url.origin}/me`)).toEqual({ user: 't' });
  });

  it('what a late answer changes while the session save is held is undone, also when the save fails (503)', async () => {
    const { server } = app(redisServer.client() as Redis, { timeout: 200 });
    server.post('/late', async (req, res) => {
      (req.session as unknown as { note: string }).note = 'x';
      await redisServer.plain().call('CLIENT', 'PAUSE', '600', 'WRITE');
      res.status(201).json({ ok: true });
      // A timeout guard that fires while the save is held: its answer must not mix into the 503.
      setTimeout(() => {
        res.status(504).set('X-Late', 'yes');
        res.end('late');
      }, 50);
    });
    const url = await servers.listen(server);
    const browser = new Browser();
    await browser.fetch(`${url}/login?user=l`, { method: 'POST' });
    const res = await browser.fetch(`${url}/late`, { method: 'POST' });
    expect(res.status).toBe(503);
    expect(res.headers.get('x-late')).toBeNull();
    // Framed, so the keep-alive connection survives it.
    expect(Number(res.headers.get('content-length'))).toBeGreaterThan(0);
    expect(((await res.json()) as { type: string }).type).toMatch(/session-store-unavailable/);
    await sleep(600);
  });

  it('the per-user cap ends a live session only for another live one, never for an expired entry', async () => {
    const events: KitEvent[] = [];
    const off = onKitEvent((e) => {
      if (e.component === 'session' && e.type === 'evicted') events.push(e);
    });
    try {
      const redis = redisServer.client() as Redis;
      const { server } = app(redis, { ttl: 1500, maxSessionsPerUser: 2, prefix: 'cap:' });
      const url = await servers.listen(server);
      const [active, idle, next, last] = [new Browser(), new Browser(), new Browser(), new Browser()];
      await active.fetch(`${url}/login?user=u1`, { method: 'POST' });
      await sleep(300);
      await idle.fetch(`${url}/login?user=u1`, { method: 'POST' });
      for (let i = 0; i < 5; i++) {
        await sleep(400);
        expect(await active.json(`${url}/me`)).toEqual({ user: 'u1' }); // keeps sliding
      }
      // idle's session expired, but its index entry (kept 2 × ttl) is still there.
      expect(await redis.zcard(userIndexKey('cap:', 'u1'))).toBe(2);
      await next.fetch(`${url}/login?user=u1`, { method: 'POST' });
      expect(await active.json(`${url}/me`)).toEqual({ user: 'u1' });
      // The dead entry did not count; it stays until its score retires it.
      expect(await redis.zcard(userIndexKey('cap:', 'u1'))).toBe(3);
      // Now two live sessions: a third login ends the one that expires soonest (next, idle since).
      await sleep(300);
      expect(await active.json(`${url}/me`)).toEqual({ user: 'u1' });
      await last.fetch(`${url}/login?user=u1`, { method: 'POST' });
      expect(await next.json(`${url}/me`)).toEqual({ user: null });
      expect(await active.json(`${url}/me`)).toEqual({ user: 'u1' });
      expect(await last.json(`${url}/me`)).toEqual({ user: 'u1' });
      expect(events.map((e) => (e as { sessions?: number }).sessions)).toEqual([0, 1]);
    } finally {
      off();
    }
  });
});

describe('redisSession odd values', () => {
  it.each([['ann\ud83d'], ['bob\udfff'], [Number.NaN], [Number.POSITIVE_INFINITY]])(
    'refuses the userId %p, which Redis could not keep apart from another',
    async (userId) => {
      const { sessions } = app(redisServer.client() as Redis);
      await expect(sessions.list(userId as string)).rejects.toThrow(/userId must be a non-empty string/);
      await expect(sessions.logoutAll(userId as string)).rejects.toThrow(TypeError);
      // Whatever the session handle, even one that names no session.
      await expect(sessions.revoke(userId as string, '')).rejects.toThrow(TypeError);
      await expect(sessions.revoke(userId as string, 'no-such-session')).rejects.toThrow(TypeError);
      await expect(sessions.login({} as express.Request, { userId: userId as string })).rejects.toThrow(
        TypeError,
      );
    },
  );

  it('refuses login data with an own __proto__ (a spread JSON body) before touching the session', async () => {
    const { sessions } = app(redisServer.client() as Redis);
    const data = { ...JSON.parse('{"__proto__": {"isAdmin": true}}'), userId: 'u' };
    const req = { session: { regenerate: jest.fn() } } as unknown as express.Request;
    await expect(sessions.login(req, data)).rejects.toThrow(/may not set "__proto__"/);
    expect((req.session.regenerate as jest.Mock).mock.calls).toHaveLength(0);
  });

  it('a session key holding another Redis type reads as no session (corrupt), not a 500', async () => {
    const redis = redisServer.client() as Redis;
    const { sessions, server } = app(redis, { prefix: 'wrongtype:' });
    const url = await servers.listen(server);
    const events: string[] = [];
    const off = onKitEvent((e) => {
      if (e.component === 'session') events.push(e.type);
    });
    try {
      const browser = new Browser();
      const { id } = (await browser.json(`${url}/login?user=w`, { method: 'POST' })) as { id: string };
      expect(id).toBeTruthy();
      const sid = decodeURIComponent(browser.cookies.get('sid')!).slice(2).split('.')[0]!;
      await redis.del(sessionKey('wrongtype:', sid));
      await redis.set(sessionKey('wrongtype:', sid), 'a string');
      const res = await browser.fetch(`${url}/me`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ user: null });
      expect(events).toContain('corrupt');
      expect(sessions).toBeDefined();
    } finally {
      off();
    }
  });

  it('with rolling: false, list() still shows when a session was last seen', async () => {
    const { sessions, server } = app(redisServer.client() as Redis, { rolling: false, prefix: 'seen:' });
    const url = await servers.listen(server);
    const browser = new Browser();
    await browser.fetch(`${url}/login?user=s`, { method: 'POST' });
    await sleep(300);
    const before = Date.now();
    await browser.fetch(`${url}/me`);
    const [info] = await sessions.list('s');
    expect(info!.lastSeenAt.getTime()).toBeGreaterThanOrEqual(before - 5);
  });
});
