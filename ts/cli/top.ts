// `xenrx top`: a live view of the devices a `xenrx serve` (or the demo)
// serves, like xentop: read from its `/stats` endpoint every interval,
// redrawn in place. Keys: s sorts by the next column, r reverses, q quits.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';

import type { StatsDocument } from '../stats/server.js';
import { integer } from './args.js';
import { TOP_COLUMNS, renderTable, sortRows, topRows } from './top-view.js';
import type { TopColumn } from './top-view.js';

interface Options {
  url?: string;
  interval: number;
  sort: TopColumn;
  reverse: boolean;
  once: boolean;
}

const CLEAR = '\x1b[H\x1b[2J';
const HIDE_CURSOR = '\x1b[?25l';
const SHOW_CURSOR = '\x1b[?25h';

function column(value: string): TopColumn {
  const c = value.toLowerCase();
  if (!(TOP_COLUMNS as readonly string[]).includes(c)) throw new InvalidArgumentError(`unknown column ${JSON.stringify(value)} (columns: ${TOP_COLUMNS.join(', ')})`);
  return c as TopColumn;
}

async function fetchStats(url: string): Promise<StatsDocument> {
  const res = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`${url}/stats: HTTP ${String(res.status)}`);
  return (await res.json()) as StatsDocument;
}

function sleep(ms: number, wake: { cancel?: () => void }): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake.cancel = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

/** Adds the `top` subcommand. */
export function addTopCommand(program: Command): void {
  program
    .command('top')
    .description('live device statistics, as xentop')
    .option('--url <url>', 'the statistics endpoint (default http://127.0.0.1:9469, as serve --metrics)')
    .option('--interval <ms>', 'refresh period', integer('a period in ms', 100, 3_600_000), 1000)
    .option('--sort <column>', `column to sort by (${TOP_COLUMNS.join(', ')})`, column, 'ops/s' as TopColumn)
    .option('--reverse', 'reverse the order', false)
    .option('--once', 'print one table (rates over one interval) and exit', false)
    .action(async (opts: Options) => {
      const url = (opts.url ?? 'http://127.0.0.1:9469').replace(/\/+$/, '');
      let sort = opts.sort;
      let reverse = opts.reverse;
      let before: StatsDocument | undefined;

      if (opts.once || !process.stdout.isTTY) {
        before = await fetchStats(url);
        await sleep(opts.interval, {});
        const now = await fetchStats(url);
        console.log(renderTable(sortRows(topRows(now, before), sort, reverse), sort, reverse));
        return;
      }

      let running = true;
      const wake: { cancel?: () => void } = {};
      let last: StatsDocument | undefined;
      let error: string | null = null;
      const draw = (): void => {
        const head = `xenrx top  ${url}  ${new Date().toLocaleTimeString()}  sorted by ${sort}${reverse ? ' (reversed)' : ''}  [s] sort  [r] reverse  [q] quit`;
        const body = error !== null ? `cannot read statistics: ${error}` : last ? renderTable(sortRows(topRows(last, before), sort, reverse), sort, reverse) : 'reading...';
        process.stdout.write(`${CLEAR}${head}\n\n${body}\n`);
      };
      const stdin = process.stdin;
      const onKey = (data: Buffer): void => {
        for (const ch of data.toString('latin1')) {
          if (ch === 'q' || ch === '\x03') running = false;
          else if (ch === 's') sort = TOP_COLUMNS[(TOP_COLUMNS.indexOf(sort) + 1) % TOP_COLUMNS.length] ?? sort;
          else if (ch === 'r') reverse = !reverse;
          else continue;
          draw();
          if (!running) wake.cancel?.();
        }
      };
      if (stdin.isTTY) stdin.setRawMode(true);
      stdin.on('data', onKey);
      stdin.resume();
      process.stdout.write(HIDE_CURSOR);
      try {
        while (running) {
          try {
            const now = await fetchStats(url);
            // Rates need two readings: the first is only remembered.
            if (last) before = last;
            last = now;
            error = null;
          } catch (err) {
            error = err instanceof Error ? err.message : String(err);
          }
          draw();
          await sleep(opts.interval, wake);
        }
      } finally {
        stdin.off('data', onKey);
        if (stdin.isTTY) stdin.setRawMode(false);
        stdin.pause();
        process.stdout.write(SHOW_CURSOR);
      }
    });
}
