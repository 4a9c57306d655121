// `xenrx demo`: the main job. It grows with the package: for now it only
// proves the native core loads and says so.
import { nativeInfo } from '../index.js';

/** Runs the demo and resolves when it is finished. */
export function runDemo(): Promise<void> {
  const info = nativeInfo();
  console.log(`xenrx demo: native core ${info.version} loaded (${info.target}, real Xen ${info.xenPlatform ? 'compiled in' : 'not compiled in'}).`);
  console.log('xenrx demo: the embedded simulated host (XenStore daemon, hypervisor, guests) is not part of this build yet; nothing else to run.');
  return Promise.resolve();
}
