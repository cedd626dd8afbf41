/**
 * Re-renders bench/results/latest.{md,svg} from latest.json with the current report code, without
 * measuring again: `npm run bench:render`. Targets are re-checked against the current scenario
 * definitions; the measured numbers are never touched.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RESULTS, writeResults } from './report/write';
import { type BenchReport, checkTargets } from './results';
import { SCENARIOS } from './scenarios/index';

const report = JSON.parse(readFileSync(join(RESULTS, 'latest.json'), 'utf8')) as BenchReport;
report.targets = checkTargets(report.groups, SCENARIOS);
process.stdout.write(`${writeResults(report)}\n`);
