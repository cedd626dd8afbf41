import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchReport } from '../results';
import { markdown } from './markdown';
import { barChart } from './svg';

export const RESULTS = join(__dirname, '..', 'results');

/** Writes bench/results/latest.{md,json,svg} for a report; returns the Markdown. */
export function writeResults(report: BenchReport): string {
  const text = markdown(report);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'latest.md'), text);
  writeFileSync(join(RESULTS, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(RESULTS, 'latest.svg'), barChart(report));
  return text;
}
