import { nodeOf } from './breaker';
import { isCluster, type RedisClient } from './client';

// The id of "the client as a whole": standalone and sentinel clients, keyless calls, and Cluster
// calls made before the slot map is known.
const WHOLE_CLIENT = '';
// end() runs after every successful call: no allocation when nothing is down.
const NONE: readonly string[] = Object.freeze([]);

/**
 * Tracks which Redis nodes a middleware currently sees as down, so that it warns once per outage and
 * reports recovery only when the node that failed answers again. With a single client-wide flag, a
 * Cluster with one dead master would flap between "down" and "recovered" on every request that
 * happens to land on a healthy one.
 */
export class OutageTracker {
  /** Down node → a key that failed on it (to notice when its slot has moved to another master). */
  private readonly down = new Map<string, string | undefined>();
  /** Node → when an outage of it was last announced. */
  private readonly announced = new Map<string, number>();
  /** Nodes down now whose outage began in the quiet time, not announced (yet). */
  private readonly unannounced = new Set<string>();

  /**
   * `quietMs`: a node whose outage was announced less than this long ago is not announced again. A
   * flapping Redis (overloaded: every other call times out; a Cluster slot migrating) would otherwise
   * start and end an outage per request, and log a line each time.
   */
  constructor(
    private readonly redis: RedisClient,
    private readonly quietMs = 60_000,
  ) {}

  /**
   * Records a failure on the node serving `key`. Returns that node's id when this starts a new
   * outage to announce (warn now), undefined while the outage goes on or soon after the last one.
   */
  begin(key?: string): string | undefined {
    const node = this.nodeOf(key);
    // Monotonic: a wall clock stepped back would keep the next outages quiet for as long as the step.
    const now = performance.now();
    const last = this.announced.get(node);
    const quiet = last !== undefined && now - last < this.quietMs;
    if (this.down.has(node)) {
      // An outage that began in the quiet time and goes on past it is announced after all.
      if (quiet || !this.unannounced.has(node)) return undefined;
    } else {
      this.down.set(node, key);
      if (quiet) {
        this.unannounced.add(node);
        return undefined;
      }
    }
    this.unannounced.delete(node);
    this.announced.set(node, now);
    return node;
  }

  /**
   * Records a success on the node serving `key`. Returns the outages it ends: that node's, the
   * whole-client one (a node answered, so the client works), and those of nodes whose failed key is
   * now served by another master (a replica took over; its successes are the recovery).
   */
  end(key?: string): readonly string[] {
    if (this.down.size === 0) return NONE;
    const ended: string[] = [];
    const node = this.nodeOf(key);
    for (const id of [node, WHOLE_CLIENT]) if (this.down.delete(id)) ended.push(id);
    for (const [id, failedKey] of this.down) {
      if (this.nodeOf(failedKey) === id) continue;
      this.down.delete(id);
      ended.push(id);
    }
    for (const id of ended) this.unannounced.delete(id);
    return ended;
  }

  private nodeOf(key: string | undefined): string {
    if (key === undefined || !isCluster(this.redis)) return WHOLE_CLIENT;
    return nodeOf(this.redis, key) ?? WHOLE_CLIENT;
  }
}

/** The `node` field of an outage's events: undefined for the whole client. */
export const nodeField = (id: string): string | undefined => (id === WHOLE_CLIENT ? undefined : id);
