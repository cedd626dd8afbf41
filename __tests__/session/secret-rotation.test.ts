import type { Redis } from 'ioredis';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { sessionApp, sessionCookie } from './app';

// The README's rotation advice, checked on instances that share one Redis during a rolling deploy:
// whichever two neighbouring deploys run side by side, a logged-in user stays logged in.

const OLD = 'an-old-test-secret-that-is-long-enough-01';
const NEW = 'a-new-test-secret-that-is-long-enough-002';
const server = useRedisServer();

function instance(secret: string | string[]) {
  return sessionApp(redisSession({ redis: server.client() as Redis, secret }));
}

async function loginOn(app: ReturnType<typeof instance>, user: string): Promise<string> {
  return sessionCookie(await request(app).post(`/login/${user}`).expect(200))!.split(';')[0]!;
}

describe('redisSession secret rotation during a rolling deploy', () => {
  it('rotated in two deploys ([old, new], then [new, old]): every instance of neighbouring deploys reads every session', async () => {
    const deploys = [instance(OLD), instance([OLD, NEW]), instance([NEW, OLD])];
    for (let i = 0; i < deploys.length - 1; i++) {
      for (const [from, to] of [
        [deploys[i]!, deploys[i + 1]!],
        [deploys[i + 1]!, deploys[i]!],
      ]) {
        const cookie = await loginOn(from!, `u${i}`);
        const read = await request(to!).get('/me').set('Cookie', cookie).expect(200);
        expect(read.body.userId).toBe(`u${i}`);
        // A write there keeps the logged-in cookie (none re-signed under a secret `from` lacks).
        await request(to!).post('/count').set('Cookie', cookie).expect(200);
        expect((await request(from!).get('/me').set('Cookie', cookie)).body).toMatchObject({
          userId: `u${i}`,
          views: 1,
        });
      }
    }
  });

  it('why not in one deploy: an instance not yet rotated cannot verify a cookie the rotated ones sign, and the user is logged out there', async () => {
    const cookie = await loginOn(instance([NEW, OLD]), 'u');
    const read = await request(instance(OLD)).get('/me').set('Cookie', cookie).expect(200);
    expect(read.body.userId).toBeNull();
  });
});
