import type { BenchReport, GroupResult, ScenarioResult } from '../results';

const ratio = (n: number | undefined) => (n === undefined ? '' : `${n.toFixed(2)}×`);
const ms = (n: number) => (n < 10 ? n.toFixed(1) : n.toFixed(0));

function commands(result: ScenarioResult): string {
  const mix = Object.entries(result.commandMix)
    .filter(([, perRequest]) => perRequest >= 0.005)
    .sort((a, b) => b[1] - a[1])
    .map(([name, perRequest]) => `${name} ${perRequest.toFixed(2)}`);
  const total = result.commandsPerRequest.toFixed(2);
  return mix.length > 0 ? `${total} (${mix.join(', ')})` : total;
}

function row(result: ScenarioResult): string {
  const warnings: string[] = [];
  if (result.unexpected > 0) warnings.push(`⚠ ${result.unexpected} unexpected statuses`);
  if (result.errors > 0) warnings.push(`⚠ ${result.errors} socket errors`);
  const label = result.kind === 'kit' ? `**${result.label}**` : result.label;
  return `| ${[
    label + (warnings.length ? ` ${warnings.join(', ')}` : ''),
    Math.round(result.reqPerSec).toLocaleString('en-US'),
    ratio(result.vsBare),
    ratio(result.vsPeer),
    ms(result.p50),
    ms(result.p99),
    commands(result),
    result.redisCallsPerRequest.toFixed(2),
    `±${Math.round((result.spread * 100) / 2)} %`,
  ].join(' | ')} |`;
}

export function groupTable(group: GroupResult): string {
  return [
    `### ${group.title}`,
    '',
    '| scenario | req/s | × bare | × peer | p50 ms | p99 ms | Redis cmds/req | calls in Redis/req | spread |',
    '|---|--:|--:|--:|--:|--:|---|--:|--:|',
    ...group.results.map(row),
    '',
    ...(group.note ? [`_${group.note}_`, ''] : []),
  ].join('\n');
}

/** The tables only: what the README "Performance" section embeds at `<!-- bench:table -->`. */
export function tables(report: BenchReport): string {
  return report.groups.map(groupTable).join('\n');
}

export function markdown(report: BenchReport): string {
  const { machine: m, settings: s } = report;
  const lines = [
    `## Benchmark — ${report.generatedAt}`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}; Node ${m.node}; Redis ${m.redis}; ` +
      `load average ${m.loadAverage} at start.`,
    `Load: autocannon, ${s.connections} connections (unless a group title says otherwise), ${s.warmupSeconds} s warm-up, ${s.rounds} interleaved rounds ` +
      `of ${s.durationSeconds} s${s.quick ? ' (--quick: rough numbers)' : ''}. ` +
      'req/s, p50 and p99 are medians over the rounds; × bare and × peer compare medians of the same group; ' +
      'spread is ±half the range of the rounds. Redis cmds/req: commands the app sent (round trips, ' +
      'pipelined or not); calls in Redis/req: INFO commandstats, which also counts the calls inside Lua scripts.',
    '',
    tables(report),
  ];
  if (report.targets.length > 0) {
    lines.push('### Targets', '', '| scenario | target | measured | |', '|---|---|--:|:-:|');
    for (const t of report.targets)
      lines.push(`| ${t.label} | ${t.target} | ${t.measured} | ${t.pass ? '✅' : '❌'} |`);
    lines.push('');
  }
  if (report.skipped.length > 0) {
    lines.push('### Skipped', '');
    for (const s of report.skipped) lines.push(`- \`${s.id}\` (${s.label}): ${s.reason}`);
    lines.push('');
  }
  return lines.join('\n');
}
