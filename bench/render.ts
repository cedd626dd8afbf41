/**
 * Re-renders bench/results/latest.{md,svg} from latest.json with the current report code, without
 * measuring again: `npm run bench:render`. Targets are re-checked against the current scenario
 * definitions; the measured numbers are never touched.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { markdown } from './report/markdown';
import { barChart } from './report/svg';
import { type BenchReport, checkTargets } from './results';
import { GROUPS } from './scenarios/index';

const RESULTS = join(__dirname, 'results');

const report = JSON.parse(readFileSync(join(RESULTS, 'latest.json'), 'utf8')) as BenchReport;
const definitions = new Map(GROUPS.map((g) => [g.id, g]));
for (const group of report.groups) group.connections ??= definitions.get(group.id)?.connections;
report.targets = checkTargets(
  report.groups,
  new Map(GROUPS.flatMap((g) => g.scenarios).map((s) => [s.id, s])),
);
const text = markdown(report);
writeFileSync(join(RESULTS, 'latest.md'), text);
writeFileSync(join(RESULTS, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
writeFileSync(join(RESULTS, 'latest.svg'), barChart(report));
process.stdout.write(`${text}\n`);
