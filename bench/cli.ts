import { parseArgs } from 'node:util';
import type { LoadSettings } from './load';

export interface BenchSettings extends LoadSettings {
  quick: boolean;
  warmupSeconds: number;
  rounds: number;
  only: string | undefined;
  list: boolean;
  write: boolean;
}

// Full: ~12 s of load per scenario; quick: ~1.5 s. Both stay within the budgets (10 min / 2 min on 2 cores).
const FULL = { warmupSeconds: 2, rounds: 5, durationSeconds: 2 };
const QUICK = { warmupSeconds: 0.3, rounds: 2, durationSeconds: 0.6 };

export const USAGE = `npm run bench -- [options]
  --quick            short runs (a smoke test; numbers are rough)
  --only <pattern>   only scenarios whose id matches (regex, case-insensitive; see --list); bare
                     Express (and a group's other yardsticks) always run alongside
  --rounds <n>       interleaved rounds per scenario (full: ${FULL.rounds}, quick: ${QUICK.rounds})
  --duration <s>     seconds of load per round (full: ${FULL.durationSeconds}, quick: ${QUICK.durationSeconds})
  --warmup <s>       seconds of unmeasured load per scenario first (full: ${FULL.warmupSeconds}, quick: ${QUICK.warmupSeconds})
  --connections <n>  concurrent keep-alive connections (default 10)
  --no-write         print only; leave bench/results/ alone
  --list             list the scenarios and exit`;

function positive(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!(n > 0)) throw new Error(`--${name} must be a positive number; got ${JSON.stringify(value)}`);
  return n;
}

export function parseSettings(argv: string[]): BenchSettings | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      'no-write': { type: 'boolean', default: false },
      list: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const base = values.quick ? QUICK : FULL;
  return {
    quick: values.quick,
    only: values.only,
    list: values.list,
    write: !values['no-write'],
    rounds: Math.round(positive(values.rounds, 'rounds', base.rounds)),
    durationSeconds: positive(values.duration, 'duration', base.durationSeconds),
    warmupSeconds: positive(values.warmup, 'warmup', base.warmupSeconds),
    connections: Math.round(positive(values.connections, 'connections', 10)),
  };
}
