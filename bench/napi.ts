// Cost of one crossing of the napi boundary, against a plain JS call. This is
// why the data paths cross per batch, never per request.
import { nativeInfo } from '../ts/index.js';
import { report, timePerCall } from './report.js';

interface Info {
  version: string;
  xenPlatform: boolean;
  target: string;
}

/** Runs the benchmark and prints its figures. */
export function run(): void {
  const iterations = 200_000;
  let sink = 0;
  const jsInfo = (): Info => ({ version: '0.0.0', xenPlatform: false, target: 'js' });
  const js = timePerCall(() => (sink += jsInfo().version.length), iterations);
  const napi = timePerCall(() => (sink += nativeInfo().version.length), iterations);
  report({
    bench: 'napi',
    metric: 'call returning a 3-field object',
    value: napi,
    unit: 'ns/call',
    reference: { name: 'same call in plain JS', value: js, unit: 'ns/call' },
    iterations,
    sink: sink > 0,
  });
}
