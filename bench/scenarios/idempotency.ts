import express, { type RequestHandler } from 'express';
import { benchApp, kitExport, send } from './app';
import type { Group, RequestSpec } from './types';

type IdempotencyFactory = (options: Record<string, unknown>) => RequestHandler;

const REQUEST: RequestSpec = {
  method: 'POST',
  path: '/',
  headers: { 'content-type': 'application/json', 'idempotency-key': 'bench-replay-0001' },
  body: JSON.stringify({ sku: 'A-1', quantity: 2 }),
};

export const idempotencyGroup: Group = {
  id: 'idempotency',
  title: 'Idempotency keys, replay path',
  note: 'The same POST with the same key and body every time: after the first, each one is a replay.',
  scenarios: [
    {
      id: 'idempotency/json-post',
      label: 'POST + express.json(), no idempotency',
      kind: 'baseline',
      build: async () => ({ app: benchApp({ method: 'post', use: [express.json()] }), request: REQUEST }),
    },
    {
      id: 'idempotency/replay',
      label: 'idempotency replay',
      kind: 'kit',
      peer: 'idempotency/json-post',
      header: { name: 'idempotent-replayed', value: 'true' },
      build: async (ctx) => {
        const idempotency = kitExport<IdempotencyFactory>('idempotency', 'idempotency');
        return {
          app: benchApp({
            method: 'post',
            use: [express.json(), idempotency({ redis: ctx.redis(), prefix: ctx.prefix })],
          }),
          request: REQUEST,
          prime: async (baseUrl, request) => {
            await (await send(baseUrl, request)).arrayBuffer();
            const second = await send(baseUrl, request);
            await second.arrayBuffer();
            if (second.headers.get('idempotent-replayed') !== 'true') {
              throw new Error(`the second request was not a replay (status ${second.status})`);
            }
            return undefined;
          },
        };
      },
    },
  ],
};
