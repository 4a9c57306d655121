// The simulated host as a script uses it: its temporary directory (XenStore
// sockets) does not outlive the process, whether the script stops the host,
// or a signal ends the script first.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import test from 'ava';

import { startProgram } from './helpers/process.js';

const entry = pathToFileURL(join(fileURLToPath(new URL('..', import.meta.url)), 'ts', 'index.ts')).href;

/** A script that starts a host, says where its directory is, and waits; `listen`: it handles SIGINT itself. */
function script(listen: boolean): string {
  return `import { SimulatedHost } from '${entry}';
const host = await SimulatedHost.start();
await host.createGuest(1, 'guest1');
${listen ? "process.on('SIGINT', () => { console.log('own handler'); void host.stop().then(() => console.log('stopped')); });" : ''}
console.log('dir ' + host.dir);
setInterval(() => undefined, 1000);`;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`a script ended by ${signal} leaves no host directory behind, and still ends by the signal`, async (t) => {
    const child = startProgram(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script(false)]);
    t.teardown(() => {
      if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL');
    });
    await child.waitFor(/^dir \S+$/m);
    const dir = /^dir (\S+)$/m.exec(child.output())?.[1] ?? '';
    t.true(existsSync(join(dir, 'xenstored.sock')), child.output());
    child.child.kill(signal);
    await child.exited();
    t.is(child.child.signalCode, signal);
    t.false(existsSync(dir), `${dir} is still there`);
  });
}

test("a script's own SIGINT handler decides, and stop() removes the directory", async (t) => {
  const child = startProgram(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script(true)]);
  t.teardown(() => {
    if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL');
  });
  await child.waitFor(/^dir \S+$/m);
  const dir = /^dir (\S+)$/m.exec(child.output())?.[1] ?? '';
  child.child.kill('SIGINT');
  await child.waitFor(/^stopped$/m);
  // Still running: the script's handler did not exit, and nothing else did.
  t.is(child.child.exitCode, null);
  t.regex(child.output(), /^own handler$/m);
  t.false(existsSync(dir));
  child.child.kill('SIGKILL');
  await child.exited();
});
