import type { BenchReport } from '../results';

const COLORS = { kit: '#d6336c', peer: '#4c6ef5', baseline: '#868e96' } as const;
const ROW = 22;
const LABEL_WIDTH = 330;
const BAR_WIDTH = 420;
const WIDTH = LABEL_WIDTH + BAR_WIDTH + 120;

const xml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * A horizontal bar chart of req/s relative to bare Express, one section per group, as plain SVG text
 * (no browser, no dependency) so the README can embed it.
 */
export function barChart(report: BenchReport): string {
  const bars = report.groups.flatMap((g) => g.results.map((r) => r.vsBare ?? 0));
  const scaleMax = Math.max(1.2, ...bars);
  const scale = (value: number) => (value / scaleMax) * BAR_WIDTH;
  const parts: string[] = [];
  let y = 40;
  for (const group of report.groups) {
    parts.push(`<text x="8" y="${y + 14}" class="group">${xml(group.title)}</text>`);
    y += ROW;
    for (const result of group.results) {
      const value = result.vsBare ?? 0;
      const width = Math.max(1, scale(value));
      parts.push(
        `<text x="${LABEL_WIDTH - 8}" y="${y + 15}" class="label" text-anchor="end">${xml(result.label)}</text>`,
        `<rect x="${LABEL_WIDTH}" y="${y + 3}" width="${width.toFixed(1)}" height="${ROW - 6}" fill="${COLORS[result.kind]}"/>`,
        `<text x="${(LABEL_WIDTH + width + 6).toFixed(1)}" y="${y + 15}" class="value">${value.toFixed(2)}× · ${Math.round(result.reqPerSec).toLocaleString('en-US')}/s</text>`,
      );
      y += ROW;
    }
    y += 8;
  }
  const one = LABEL_WIDTH + scale(1);
  const height = y + 30;
  const legend = (Object.keys(COLORS) as Array<keyof typeof COLORS>)
    .map(
      (kind, i) =>
        `<rect x="${LABEL_WIDTH + i * 110}" y="${height - 22}" width="12" height="12" fill="${COLORS[kind]}"/>` +
        `<text x="${LABEL_WIDTH + i * 110 + 18}" y="${height - 12}" class="label">${kind === 'kit' ? 'express-redis-kit' : kind}</text>`,
    )
    .join('');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif">`,
    '<style>.group{font-size:13px;font-weight:600;fill:#212529}.label{font-size:12px;fill:#343a40}.value{font-size:11px;fill:#495057}.title{font-size:15px;font-weight:600;fill:#212529}</style>',
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="8" y="22" class="title">req/s relative to bare Express (1.00×), ${xml(report.generatedAt.slice(0, 10))}${report.settings.quick ? ' — quick run' : ''}</text>`,
    `<line x1="${one.toFixed(1)}" y1="36" x2="${one.toFixed(1)}" y2="${y}" stroke="#adb5bd" stroke-dasharray="4 3"/>`,
    ...parts,
    legend,
    '</svg>',
    '',
  ].join('\n');
}
