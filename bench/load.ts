import autocannon from 'autocannon';
import type { RequestSpec } from './scenarios/types';

export interface LoadSettings {
  connections: number;
  durationSeconds: number;
}

/** What one load run measured. */
export interface LoadSample {
  /** Completed responses. */
  requests: number;
  /** Requests sent, including those still in flight when the run stopped: the server did work for them. */
  sent: number;
  reqPerSec: number;
  p50: number;
  p99: number;
  /** Responses without the expected status (or header). */
  unexpected: number;
  errors: number;
}

/** Drives one server with autocannon (in this process: the server runs in its own). */
/** What every response must look like; the others are counted, never silently averaged in. */
export interface Expected {
  status: number;
  header?: { name: string; value: string };
}

/** The URL of the n-th request. */
export function pathOf(spec: RequestSpec, n: number | string): string {
  if (spec.uniqueQuery) return `${spec.path}?n=${n}`;
  if (spec.cycle) return `${spec.path}?k=${typeof n === 'number' ? n % spec.cycle : n}`;
  return spec.path;
}

function headerValue(headers: Record<string, unknown> | undefined, name: string): unknown {
  for (const key in headers) if (key.toLowerCase() === name) return headers[key];
  return undefined;
}

export async function runLoad(
  port: number,
  spec: RequestSpec,
  settings: LoadSettings,
  expected: Expected,
): Promise<LoadSample> {
  // Distinct per run and per process, so that no two runs share a "unique" URL.
  const runId = `${process.pid}-${Date.now().toString(36)}`;
  let counter = 0;
  let unexpected = 0;
  const header = expected.header && {
    name: expected.header.name.toLowerCase(),
    value: expected.header.value,
  };
  const request: autocannon.Request = {
    method: spec.method ?? 'GET',
    path: spec.path,
    headers: spec.headers,
    body: spec.body,
    // autocannon calls setupRequest whenever the key is present, even when it is undefined.
    ...((spec.uniqueQuery || spec.cycle) && {
      setupRequest: (req: autocannon.Request) => ({
        ...req,
        path: pathOf(spec, spec.uniqueQuery ? `${runId}-${counter++}` : counter++),
      }),
    }),
    onResponse: (status, _body, _context, headers) => {
      if (status !== expected.status) unexpected++;
      else if (header && String(headerValue(headers, header.name)) !== header.value) unexpected++;
    },
  };
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: settings.connections,
    duration: settings.durationSeconds,
    // Stop within 0.1 s of the duration: with the default 1 s sampling, runs end on whole seconds.
    sampleInt: 100,
    requests: [request],
  });
  return {
    requests: result.requests.total,
    sent: result.requests.sent,
    reqPerSec: result.requests.total / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    unexpected,
    errors: result.errors,
  };
}
