import { reapOrphanedServers } from '../../lib/testing/cleanup';

/** Kills any redis-server that a crashed test worker left behind (its owner process is gone). */
export default function globalTeardown(): void {
  reapOrphanedServers();
}
