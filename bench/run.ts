// `npm run bench [name...]`: runs the named benchmarks (all when none named),
// each printing JSON lines.
const benches: Record<string, () => Promise<{ run: () => void | Promise<void> }>> = {
  napi: () => import('./napi.js'),
  xenstore: () => import('./xenstore.js'),
  platform: () => import('./platform.js'),
  xenbus: () => import('./xenbus.js'),
  blk: () => import('./blk.js'),
  net: () => import('./net.js'),
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in benches));
if (unknown.length > 0) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(benches).join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length > 0 ? wanted : Object.keys(benches)) {
  const load = benches[name];
  if (load) await (await load()).run();
}
