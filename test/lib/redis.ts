/** The tests' Redis: the testkit's throwaway `redis-server` (see `packages/testkit/src/redis.ts`). */
export { startRedis, type RedisServer } from '@cascade/testkit';
