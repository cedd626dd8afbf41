import type { ServerResponse } from 'node:http';

type Over = (finished: boolean) => void;

const waiting = Symbol('express-redis-kit.rate-limit.over');
type Tracked = ServerResponse & { [waiting]?: Over[] };

/**
 * Calls `callback` once when the response is over: `true` when it was sent in full ('finish'),
 * `false` when the connection closed first. Every limiter on a route shares one pair of listeners on
 * the response, so stacking many limiters with refunds does not trip Node's MaxListeners warning.
 */
export function whenOver(res: ServerResponse, callback: Over): void {
  const tracked = res as Tracked;
  const queued = tracked[waiting];
  if (queued) {
    queued.push(callback);
    return;
  }
  const callbacks: Over[] = [callback];
  tracked[waiting] = callbacks;
  const settle = (finished: boolean) => {
    delete tracked[waiting];
    res.off('finish', onFinish);
    res.off('close', onClose);
    for (const cb of callbacks.splice(0)) cb(finished);
  };
  const onFinish = () => settle(true);
  const onClose = () => settle(false);
  res.once('finish', onFinish);
  res.once('close', onClose);
}
