// Names of native artifacts, following napi-rs's platform naming so that the
// generated loader finds what `xenrx build-native` produces.

/** libc flavour of a Linux host: glibc or musl. */
export type Libc = 'gnu' | 'musl';

/** Detects the C library of the running Node process. */
export function detectLibc(): Libc {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime ? 'gnu' : 'musl';
}

/** napi-rs platform tag of this host, e.g. `linux-x64-gnu`. */
export function platformTag(
  platform: NodeJS.Platform = process.platform,
  arch: string = process.arch,
  libc: Libc = platform === 'linux' ? detectLibc() : 'gnu',
): string {
  return platform === 'linux' ? `${platform}-${arch}-${libc}` : `${platform}-${arch}`;
}

/** File name of the addon the loader looks for beside itself. */
export function nativeFileName(tag: string = platformTag()): string {
  return `xenrx.${tag}.node`;
}

/** Name of the per-platform npm package that carries the prebuilt addon. */
export function platformPackageName(tag: string = platformTag()): string {
  return `xenrx-${tag}`;
}
