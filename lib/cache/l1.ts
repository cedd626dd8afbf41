import { LRUCache } from 'lru-cache';
import type { RedisClient } from '../client';
import type { Entry } from './entry';
import { type HeardLog, reaches } from './heard';
import type { PreparedHeaders } from './http';
import type { ResolvedL1 } from './options';

/** An entry with its lifetime converted to this process' clock. */
export interface Rec {
  entry: Entry;
  /** Redis key the entry was read from or written to (the base key, for invalidation by key). */
  redisKey: string;
  /** Local time the entry was written, for `Age`. */
  bornAt: number;
  freshUntil: number;
  swrUntil: number;
  expiresAt: number;
  /** Response headers prepared once for the hit path (middleware only). */
  prepared?: PreparedHeaders;
}

/** Remembers that a key's responses vary on these request headers (the Redis marker, mirrored). */
export interface VaryRec {
  vary: string[];
  redisKey: string;
  expiresAt: number;
}

export type L1Value = Rec | VaryRec;

/** Builds a {@link Rec} from an entry that has lived `elapsedMs` (Redis TTL arithmetic) by `now`. */
export function toRec(entry: Entry, redisKey: string, elapsedMs: number, now: number): Rec {
  const bornAt = now - Math.max(0, elapsedMs);
  const freshUntil = bornAt + entry.freshMs;
  const swrUntil = freshUntil + entry.swrMs;
  return { entry, redisKey, bornAt, freshUntil, swrUntil, expiresAt: bornAt + entry.ttlMs };
}

export function isRec(value: L1Value): value is Rec {
  return (value as Rec).entry !== undefined;
}

/**
 * The in-process tier. Coherence across instances comes from the bus: every invalidation drops the
 * matching entries here, and the cache's {@link HeardLog} keeps out what a lookup or fill read
 * before an invalidation that reaches it (`set` takes the log's count from before the read).
 * Invalidations of other keys and tags do not keep it out: under a steady stream of them, L1 would
 * otherwise hardly ever be filled.
 */
export class L1 {
  private readonly lru: LRUCache<string, L1Value>;
  /**
   * Off while the invalidation bus cannot be subscribed (Redis down when the app started): other
   * instances' invalidations would go unheard, so nothing is served or kept here until it is.
   */
  private suspended = false;
  /**
   * The bus's connection is down (dropped, Redis restarted, killed by a proxy): what other instances
   * publish meanwhile is lost. Reads go to Redis first, and nothing new is kept; what is here still
   * answers when Redis cannot (the fail mode's L1 hits): read with `evenIfDeaf` then, or at once
   * while the client is not even connected.
   */
  private deaf = false;
  private closed = false;

  constructor(
    private readonly options: ResolvedL1,
    private readonly heardLog: HeardLog,
    /** Whether the cache's client can reach Redis now. */
    private readonly redisReady: () => boolean,
  ) {
    this.lru = new LRUCache<string, L1Value>({
      max: options.max,
      maxSize: options.maxSize,
      sizeCalculation: (v) => (isRec(v) ? v.entry.body.length + 256 : 64),
    });
  }

  /** A live value, or undefined (expired values are dropped on the way). */
  get(key: string, now: number, evenIfDeaf = false): L1Value | undefined {
    if (this.suspended || (this.deaf && !evenIfDeaf && this.redisReady())) return undefined;
    const value = this.lru.get(key);
    if (value === undefined) return undefined;
    if (value.expiresAt <= now) {
      this.lru.delete(key);
      return undefined;
    }
    return value;
  }

  /**
   * Keeps `value` unless an invalidation heard since `heard` reaches it: the cache's `heard` count,
   * read before the lookup or fill whose result this is.
   */
  set(key: string, value: L1Value, now: number, heard: number): void {
    if (this.suspended || this.deaf || this.heardLog.reachedSince(heard, value)) return;
    let ttl = value.expiresAt - now;
    if (this.options.ttlMs !== undefined) {
      ttl = Math.min(ttl, this.options.ttlMs);
      value.expiresAt = Math.min(value.expiresAt, now + this.options.ttlMs);
    }
    if (ttl <= 0) return;
    this.lru.set(key, value, { ttl: Math.ceil(ttl) });
  }

  delete(key: string): void {
    this.lru.delete(key);
  }

  /**
   * Drops everything stored under these Redis keys or carrying one of these tags. The cache has
   * noted the invalidation in its HeardLog first, which keeps racing fills of them out.
   */
  drop(redisKeys: ReadonlySet<string>, tags: ReadonlySet<string>): void {
    if (redisKeys.size === 0 && tags.size === 0) return;
    const doomed: string[] = [];
    for (const [key, value] of this.lru.entries()) {
      // A Vary marker has no tags: only its key reaches it.
      if (reaches(value, redisKeys, tags)) doomed.push(key);
    }
    for (const key of doomed) this.lru.delete(key);
  }

  clear(): void {
    // Whatever a lookup in flight read may have been invalidated unheard (a reconnect, the bus off).
    this.heardLog.hear(undefined);
    this.lru.clear();
  }

  /** Empties the tier and keeps it off until {@link resume}. */
  suspend(): void {
    this.suspended = true;
    this.clear();
  }

  /** Off for good: its cache closed and hears no more invalidations (a late subscription must not resume it). */
  close(): void {
    this.closed = true;
    this.suspend();
  }

  /** Back on, empty: what it would have held meanwhile may have been invalidated unheard. */
  resume(): void {
    if (this.closed) return;
    this.suspended = false;
    this.deaf = false;
    this.clear();
  }

  /**
   * The bus's connection closed: see `deaf`. Nothing is logged as heard: no value is kept meanwhile,
   * and `hearing()` logs the gap; logged now, it would also take a fill's stale-if-error copy from it
   * just as Redis went down.
   */
  deafen(): void {
    this.deaf = true;
  }

  /** See `deaf`: whether reads should go to Redis first. */
  get isDeaf(): boolean {
    return this.deaf;
  }

  /**
   * Redis answered while deaf: it can be reached, so what is here (maybe invalidated unheard) is no
   * longer the fail mode's answer for a lookup that fails later (one slow call). Emptied, without
   * logging an invalidation (see `deafen`).
   */
  redisAnswered(): void {
    if (this.deaf) this.lru.clear();
  }

  /** The bus hears again after a drop: empty, since what was published meanwhile was lost. */
  hearing(): void {
    this.deaf = false;
    this.clear();
  }

  get size(): number {
    return this.lru.size;
  }
}

const reconnectWatch = new WeakMap<object, Set<L1>>();

/**
 * Messages published while a client was disconnected are lost, so every L1 on it starts over empty
 * when it reconnects. One listener per client, however many caches use it.
 */
export function clearOnReconnect(redis: RedisClient, l1: L1): void {
  let set = reconnectWatch.get(redis);
  if (!set) {
    const created = new Set<L1>();
    set = created;
    reconnectWatch.set(redis, created);
    // A client still connecting has nothing to have missed, and no L1 can hold anything from it
    // yet; clearing at its first 'ready' would only keep the first fills (their lookups queued
    // until then) out of L1.
    let connectedBefore = redis.status === 'ready';
    redis.on('ready', () => {
      if (!connectedBefore) {
        connectedBefore = true;
        return;
      }
      for (const each of created) each.clear();
    });
  }
  set.add(l1);
}

/** The cache closed: its L1 no longer needs clearing. */
export function stopClearingOnReconnect(redis: RedisClient, l1: L1): void {
  reconnectWatch.get(redis)?.delete(l1);
}
