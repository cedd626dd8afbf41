/**
 * Real-Redis test helpers, published as `express-redis-kit/testing`: start throwaway redis-server
 * processes (standalone or a real cluster) from your own test suites.
 */
export { findRedisServer, RedisServerNotFoundError } from './binary';
export { freePort } from './ping';
export { type RedisClusterHandle, type RedisClusterOptions, startRedisCluster } from './redis-cluster';
export { type RedisServerHandle, type RedisServerOptions, startRedisServer } from './redis-server';
