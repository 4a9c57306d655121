// Guests' primary consoles, served as xenconsoled serves them. A primary
// console is no xenbus device: the toolstack writes `console/ring-ref` (a
// frame number) and `console/port` in the guest's home, the domain builder
// puts the page in the guest's reserved grant entry GNTTAB_RESERVED_CONSOLE
// for the console backend, and the backend finds the domains by watching
// @introduceDomain / @releaseDomain. Each console runs on the same Rust data
// path as console devices (NativeConsoleBackend, mapping grant 0 instead of
// the frame); its output becomes Observables and a bounded history, input
// goes into the guest's ring, and with `pty` each console gets a
// pseudo-terminal published as `console/tty`, read-only to the guest
// (XSA-57), where `xenrx console` finds it.
//
// Domains and their console nodes do not appear together: libxl may
// introduce a domain before or after it writes the console nodes, and
// rewrites them when a guest resumes. So, as xenconsoled does, each domain
// has a watch on its `console` directory for as long as it lives, and every
// change there makes the service look again: a console whose nodes appear
// late is picked up, one whose port changed is bound anew, one whose nodes
// vanish is stopped. Re-reading every domain's nodes on each
// @introduceDomain would also find late nodes, but only at the next
// introduction, which may never come.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { Observable, Subject, filter, map } from 'rxjs';
import type { Subscription } from 'rxjs';

import { native } from '../native.js';
import type { ConsoleBackendStats, NativeConsoleBackend } from '../native.js';
import { consoleDeviceStats } from '../stats/types.js';
import type { ConsoleDeviceStats, StatsSource } from '../stats/types.js';
import { PlatformError } from '../platform/errors.js';
import type { DomainLiveness, LogLevel } from '../xenbus/index.js';
import { isXenStoreError } from '../xenstore/index.js';
import type { XenStore } from '../xenstore/index.js';
import { ConsoleHistory, ConsoleHistoryFile, historyFileName, pruneHistoryFiles } from './console-history.js';
import { MAX_CONSOLE_LINE, clearTty, decodeUtf8, publishTty, splitLines, startConsoleBackend } from './console.js';
import type { ConsoleOptions } from './console.js';

/** How much of each console's latest output is kept for late readers, by default: 64 KiB. */
export const DEFAULT_CONSOLE_HISTORY = 64 * 1024;

/** Which domains live (the lifecycle's `DomainWatcher` is one): what the xenbus registry takes too. */
export type PrimaryConsoleDomains = DomainLiveness;

/** One log line of the service: `domid` is the console's domain, null for the service itself. */
export interface PrimaryConsoleLogEntry {
  readonly level: LogLevel;
  readonly domid: number | null;
  readonly message: string;
}

/** How primary consoles are served. */
export interface PrimaryConsoleOptions extends ConsoleOptions {
  /** The XenStore connection (dom0's, or the console backend domain's). */
  readonly xs: XenStore;
  /**
   * Which domains live: a console of a domain that died is stopped at
   * once. Without it, the service asks XenStore on each @releaseDomain
   * whether each domain is still introduced.
   */
  readonly domains?: PrimaryConsoleDomains;
  /** Bytes of latest output kept per console (default {@link DEFAULT_CONSOLE_HISTORY}; 0 keeps none). */
  readonly historyBytes?: number;
  /**
   * Keeps each console's history in a file in this directory too,
   * `console-<domid>-<name>.log` (the raw output, as xenconsoled's guest
   * logs): a service started again with the same directory, after a
   * crash or an upgrade, starts each console's history with what this one
   * kept. The file of a domain that dies is removed, as are files left by
   * domains that died while no service ran.
   */
  readonly historyDir?: string;
  /** Where log lines go (default: errors to stderr). Level 1 says when a console connects and closes. */
  readonly logger?: (entry: PrimaryConsoleLogEntry) => void;
}

/** What `output$`, `text$` and `lines$` start with. */
export interface PrimaryConsoleReadOptions {
  /** Start with the history kept so far (the boot log), then go on live (default false: live only). */
  readonly history?: boolean;
}

/** A guest's primary console output. */
export interface PrimaryConsoleOutput {
  readonly domid: number;
  readonly data: Buffer;
}

/** The grant entry a primary console's page is reached through (Xen's GNTTAB_RESERVED_CONSOLE). */
function reservedConsoleGrant(): number {
  return native.GNTTAB_RESERVED_CONSOLE;
}

/** A domain id as XenStore lists it under /local/domain. */
const DOMID = /^(0|[1-9][0-9]{0,4})$/;
/** A decimal number as libxl writes it (no sign, no leading zero, no spaces). */
const DECIMAL = /^(0|[1-9][0-9]*)$/;
/** The largest event-channel port the native layer takes (u32). */
const MAX_PORT = 0xffff_ffff;
/** A domain the service follows, from its introduction until it dies. */
interface DomainRecord {
  readonly domid: number;
  /** `/local/domain/<domid>`. */
  readonly home: string;
  /** The watch on `<home>/console`. */
  watch: Subscription | null;
  backend: NativeConsoleBackend | null;
  /** What the running backend was started for. */
  served: { readonly ringRef: number; readonly port: number } | null;
  /** The problem last reported, so that each is logged once. */
  reported: string | null;
  /** Notices from the data path since the last connect. */
  notices: number;
  /** The look at the console nodes that is running, and whether another one is wanted after it. */
  checking: Promise<void> | null;
  recheck: boolean;
  ended: boolean;
  readonly history: ConsoleHistory;
  /** Where the history is written through, once the guest's name is known (with `historyDir`). */
  historyFile: ConsoleHistoryFile | null;
}

/** What a domain's console nodes say, read together. */
interface ConsoleNodes {
  readonly home: boolean;
  readonly ringRef: string | undefined;
  readonly port: string | undefined;
  readonly type: string | undefined;
  readonly name: string | undefined;
}

/** What to do about a domain's console, from its nodes. */
type Plan =
  | { readonly kind: 'serve'; readonly ringRef: number; readonly port: number }
  | { readonly kind: 'wait'; readonly why: string }
  | { readonly kind: 'invalid'; readonly why: string }
  | { readonly kind: 'other'; readonly why: string }
  | { readonly kind: 'gone' };

/** Judges a domain's console nodes as xenconsoled does, with stricter numbers. */
function planFor(nodes: ConsoleNodes): Plan {
  if (!nodes.home) return { kind: 'gone' };
  const { ringRef, port, type } = nodes;
  if (type !== undefined && type !== 'xenconsoled') {
    return { kind: 'other', why: `console/type is ${JSON.stringify(type)}: another backend serves it` };
  }
  const missing = [ringRef === undefined ? 'console/ring-ref' : null, port === undefined ? 'console/port' : null].filter((m) => m !== null);
  if (ringRef === undefined || port === undefined) return { kind: 'wait', why: `no ${missing.join(' or ')} yet; waiting for them` };
  const frame = DECIMAL.test(ringRef) ? Number(ringRef) : NaN;
  if (!Number.isSafeInteger(frame)) return { kind: 'invalid', why: `console/ring-ref is ${JSON.stringify(ringRef.slice(0, 64))}, not a frame number; not served` };
  const p = DECIMAL.test(port) ? Number(port) : NaN;
  if (!Number.isSafeInteger(p) || p <= 0 || p > MAX_PORT) return { kind: 'invalid', why: `console/port is ${JSON.stringify(port.slice(0, 64))}, not an event-channel port; not served` };
  return { kind: 'serve', ringRef: frame, port: p };
}

function errorText(err: unknown): string {
  if (isXenStoreError(err)) return err.code;
  return err instanceof Error ? err.message : String(err);
}

/** The default sink: errors to stderr. */
function stderrLog(e: PrimaryConsoleLogEntry): void {
  if (e.level === 0) process.stderr.write(`xenrx: ${e.domid === null ? 'primary consoles' : `console of domain ${String(e.domid)}`}: ${e.message}\n`);
}

/** Guests' primary consoles, found by watching the domains and served as xenconsoled does. */
export class PrimaryConsoleService implements StatsSource {
  readonly #options: PrimaryConsoleOptions;
  readonly #xs: XenStore;
  readonly #log: (entry: PrimaryConsoleLogEntry) => void;
  readonly #historyBytes: number;
  readonly #records = new Map<number, DomainRecord>();
  readonly #output = new Subject<PrimaryConsoleOutput>();
  readonly #subscriptions: Subscription[] = [];
  #scanning = false;
  #rescan = false;
  #closed = false;

  /** Every primary console's output, raw, as it arrives. */
  readonly outputs$: Observable<PrimaryConsoleOutput> = this.#output.asObservable();

  private constructor(options: PrimaryConsoleOptions) {
    const history = options.historyBytes ?? DEFAULT_CONSOLE_HISTORY;
    if (!Number.isSafeInteger(history) || history < 0) throw new RangeError(`historyBytes must be a whole number of bytes, got ${String(history)}`);
    this.#options = options;
    this.#xs = options.xs;
    this.#log = options.logger ?? stderrLog;
    this.#historyBytes = history;
    if (options.historyDir !== undefined) mkdirSync(options.historyDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Starts serving: reads the domains there are now and serves each one's
   * primary console (whose `console/type` is absent or `xenconsoled`),
   * then follows @introduceDomain and @releaseDomain. Resolves once the
   * domains there are now have been looked at.
   */
  static async start(options: PrimaryConsoleOptions): Promise<PrimaryConsoleService> {
    const service = new PrimaryConsoleService(options);
    await service.#begin();
    return service;
  }

  async #begin(): Promise<void> {
    const watchFailed = (what: string) => (err: unknown) => this.#emit(0, null, `watching ${what} failed: ${errorText(err)}`);
    this.#subscriptions.push(
      this.#xs.watch$('@introduceDomain').subscribe({ next: () => this.#scan(), error: watchFailed('@introduceDomain') }),
      this.#xs.watch$('@releaseDomain').subscribe({ next: () => void this.#checkReleased(), error: watchFailed('@releaseDomain') }),
    );
    if (this.#options.domains) {
      this.#subscriptions.push(this.#options.domains.deaths$.subscribe((domid) => this.#end(domid, 'its domain died')));
    }
    await this.#scanNow();
    // Files of domains that died while no service ran.
    const dir = this.#options.historyDir;
    if (dir !== undefined) pruneHistoryFiles(dir, (domid) => this.#records.has(domid));
  }

  #emit(level: LogLevel, domid: number | null, message: string): void {
    this.#log({ level, domid, message });
  }

  /** Reports a domain's problem, once for as long as it stays the same. */
  #report(rec: DomainRecord, level: LogLevel, message: string): void {
    if (rec.reported === message) return;
    rec.reported = message;
    this.#emit(level, rec.domid, message);
  }

  /** Looks at the domain list again (at most one look running, one more queued). */
  #scan(): void {
    if (this.#scanning) {
      this.#rescan = true;
      return;
    }
    void this.#scanNow();
  }

  async #scanNow(): Promise<void> {
    this.#scanning = true;
    try {
      do {
        this.#rescan = false;
        await this.#scanOnce().catch((err: unknown) => this.#emit(0, null, `reading the domain list failed: ${errorText(err)}`));
      } while (this.#rescan && !this.#closed);
    } finally {
      this.#scanning = false;
    }
  }

  async #scanOnce(): Promise<void> {
    const names = await this.#xs.list('/local/domain').catch((err: unknown) => {
      if (isXenStoreError(err, 'ENOENT')) return [];
      throw err;
    });
    if (this.#closed) return;
    const own = this.#options.platform.domid;
    // dom0's console is Xen's own, never xenconsoled's.
    const listed = new Set(names.filter((n) => DOMID.test(n)).map(Number).filter((d) => d !== 0 && d !== own));
    for (const domid of [...this.#records.keys()]) {
      if (!listed.has(domid)) this.#end(domid, 'its domain is gone');
    }
    for (const domid of listed) {
      if (this.#records.has(domid)) continue;
      // A domain on its way out (released, its home not yet removed) is
      // not taken up again.
      if (!(await this.#alive(domid)) || this.#closed || this.#records.has(domid)) continue;
      await this.#follow(domid);
    }
  }

  /** Whether a domain lives; in doubt, yes (a console is never stopped on a guess). */
  async #alive(domid: number): Promise<boolean> {
    try {
      const { domains } = this.#options;
      return domains ? await domains.exists(domid) : await this.#xs.isDomainIntroduced(domid);
    } catch (err) {
      this.#emit(2, domid, `cannot tell whether the domain lives: ${errorText(err)}`);
      return true;
    }
  }

  /** On @releaseDomain: the consoles of domains no longer alive stop. */
  async #checkReleased(): Promise<void> {
    for (const rec of [...this.#records.values()]) {
      // The record may have ended, and its id been taken by a new domain,
      // while liveness was asked.
      if (!(await this.#alive(rec.domid)) && this.#records.get(rec.domid) === rec) this.#end(rec.domid, 'its domain was released');
    }
  }

  /**
   * Follows a new domain: its `console` directory is watched for as long
   * as it lives. Resolves once its console nodes were looked at.
   */
  #follow(domid: number): Promise<void> {
    const rec: DomainRecord = {
      domid,
      home: `/local/domain/${String(domid)}`,
      watch: null,
      backend: null,
      served: null,
      reported: null,
      notices: 0,
      checking: null,
      recheck: false,
      ended: false,
      history: new ConsoleHistory(this.#historyBytes),
      historyFile: null,
    };
    this.#records.set(domid, rec);
    rec.watch = this.#xs.watch$(`${rec.home}/console`).subscribe({
      next: () => void this.#check(rec),
      error: (err: unknown) => this.#report(rec, 0, `watching ${rec.home}/console failed: ${errorText(err)}; not served`),
    });
    // The watch fires once when set, too; looking now lets start() and a
    // scan resolve with the console served.
    return this.#check(rec);
  }

  /**
   * Looks at a domain's console nodes again: at most one look runs, and
   * one more is queued behind it however many changes came meanwhile.
   * Resolves once the looks are done.
   */
  #check(rec: DomainRecord): Promise<void> {
    if (rec.checking) {
      rec.recheck = true;
      return rec.checking;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          rec.recheck = false;
          await this.#checkOnce(rec).catch((err: unknown) => this.#report(rec, 0, `reading the console nodes failed: ${errorText(err)}`));
        } while (rec.recheck && !rec.ended && !this.#closed);
      } finally {
        rec.checking = null;
      }
    };
    rec.checking = run();
    return rec.checking;
  }

  async #checkOnce(rec: DomainRecord): Promise<void> {
    const dir = `${rec.home}/console`;
    // One snapshot, so that a port and ring-ref written together are read together.
    const nodes = await this.#xs.transaction(
      async (tx): Promise<ConsoleNodes> => ({
        home: await tx.exists(rec.home),
        ringRef: await tx.tryRead(`${dir}/ring-ref`),
        port: await tx.tryRead(`${dir}/port`),
        type: await tx.tryRead(`${dir}/type`),
        name: await tx.tryRead(`${rec.home}/name`),
      }),
    );
    if (rec.ended || this.#closed) return;
    const plan = planFor(nodes);
    switch (plan.kind) {
      case 'gone':
        this.#end(rec.domid, 'its domain is gone');
        return;
      case 'other':
      case 'wait':
        // Someone else serves it now, or its nodes went away (the guest
        // removed its console directory, a new domain of the same id is
        // being built): whatever this backend served is no longer there.
        await this.#stopBackend(rec, plan.kind === 'other' ? 'handed to another backend' : 'its console nodes were removed');
        this.#report(rec, 1, plan.why);
        return;
      case 'invalid':
        // As xenconsoled, a console already served stays served: its
        // page and port are still good, whatever the nodes now say.
        this.#report(rec, 0, plan.why);
        return;
      case 'serve':
        if (rec.served?.port === plan.port && rec.served.ringRef === plan.ringRef && rec.backend) return;
        await this.#stopBackend(rec, `it moved to port ${String(plan.port)}`);
        if (rec.ended || this.#closed) return;
        this.#openHistoryFile(rec, nodes.name ?? '');
        await this.#serve(rec, plan.ringRef, plan.port);
        return;
      default: {
        const never: never = plan;
        return never;
      }
    }
  }

  /**
   * With `historyDir`, opens the guest's history file once its name is
   * known (before the first output), starting the history with what a
   * service before this one kept; a file of the same id under another
   * name is an earlier guest's, and goes.
   */
  #openHistoryFile(rec: DomainRecord, name: string): void {
    const dir = this.#options.historyDir;
    if (dir === undefined || rec.historyFile !== null || this.#historyBytes === 0) return;
    const file = historyFileName(rec.domid, name);
    try {
      pruneHistoryFiles(dir, (domid, other) => domid !== rec.domid || other === file);
      rec.historyFile = ConsoleHistoryFile.open(join(dir, file), rec.history, (err) =>
        this.#emit(0, rec.domid, `writing the history file failed: ${errorText(err)}; kept in memory only`),
      );
    } catch (err) {
      this.#report(rec, 0, `opening the history file ${join(dir, file)} failed: ${errorText(err)}; kept in memory only`);
    }
  }

  /** Starts the data path on grant entry 0 and the guest's port, and publishes the pseudo-terminal. */
  async #serve(rec: DomainRecord, ringRef: number, port: number): Promise<void> {
    rec.notices = 0;
    let backend: NativeConsoleBackend;
    try {
      backend = startConsoleBackend(
        this.#options,
        { domid: rec.domid, ringRef: reservedConsoleGrant(), port },
        (chunks) => {
          // A console that was stopped may still hand over its last chunks;
          // they belong to the domain as long as the service follows it.
          if (this.#records.get(rec.domid) !== rec) return;
          for (const data of chunks) {
            (rec.historyFile ?? rec.history).push(data);
            this.#output.next({ domid: rec.domid, data });
          }
        },
        (notice) => this.#notice(rec, backend, notice),
      );
    } catch (err) {
      const e = PlatformError.fromNative(err);
      this.#report(rec, 0, `cannot serve the console (grant ${String(reservedConsoleGrant())}, port ${String(port)}): ${errorText(e)}`);
      return;
    }
    rec.backend = backend;
    rec.served = { ringRef, port };
    rec.reported = null;
    const tty = backend.ptyPath;
    if (tty !== null) await this.#publishTty(rec, tty);
    if (rec.backend !== backend) {
      // Stopped while the tty was being published: a service that closed
      // meanwhile may have emptied it before it was written.
      if (tty !== null && this.#closed) await this.#unpublishTty(rec);
      return;
    }
    this.#emit(1, rec.domid, `connected (port ${String(port)})`);
    if (tty !== null) this.#emit(1, rec.domid, `tty ${tty}`);
  }

  /** What the data path reports; a failed event channel ends the backend, so that a change of the nodes tries again. */
  #notice(rec: DomainRecord, backend: NativeConsoleBackend, notice: string): void {
    // A hostile guest could repeat this forever: the first is an error,
    // the rest noise.
    this.#emit(rec.notices++ === 0 ? 0 : 2, rec.domid, notice);
    if (rec.backend === backend && backend.failure !== null) void this.#stopBackend(rec, 'its event channel failed');
  }

  /**
   * Publishes the pseudo-terminal as `console/tty`, owned by the backend
   * domain and read-only to the guest (XSA-57): the toolstack pre-creates
   * it so, and where it did not, or the node was replaced, it is (re)made
   * with those permissions. A console directory the guest removed is not
   * made again.
   */
  async #publishTty(rec: DomainRecord, tty: string): Promise<void> {
    const dir = `${rec.home}/console`;
    try {
      await publishTty(this.#xs, dir, tty, this.#options.platform.domid, rec.domid);
    } catch (err) {
      this.#emit(0, rec.domid, `publishing ${dir}/tty failed: ${errorText(err)}`);
    }
  }

  /**
   * Empties the published `console/tty` of a domain that lives on: its
   * pseudo-terminal is gone and the number will be handed out again.
   */
  async #unpublishTty(rec: DomainRecord): Promise<void> {
    const node = `${rec.home}/console/tty`;
    try {
      await clearTty(this.#xs, node);
    } catch (err) {
      this.#emit(0, rec.domid, `clearing ${node} failed: ${errorText(err)}`);
    }
  }

  /**
   * Stops a domain's data path, if one runs; resolves once its tty is
   * emptied (awaited before a new tty is published, so the two cannot
   * land in the wrong order).
   */
  async #stopBackend(rec: DomainRecord, why: string): Promise<void> {
    const backend = rec.backend;
    if (!backend) return;
    const hadPty = backend.ptyPath !== null;
    rec.backend = null;
    rec.served = null;
    backend.stop();
    this.#emit(1, rec.domid, `closed (${why})`);
    // The domain lives on: its tty must not name a terminal number that
    // will be handed to someone else.
    if (hadPty && !this.#closed) await this.#unpublishTty(rec);
  }

  /**
   * A domain died or its home went (`died`, the default): its console
   * stops, its watch and history go, its history file too. When the
   * service stops instead, the file stays for the next one.
   */
  #end(domid: number, why: string, died = true): void {
    const rec = this.#records.get(domid);
    if (!rec || rec.ended) return;
    rec.ended = true;
    rec.historyFile?.close(died);
    rec.historyFile = null;
    this.#records.delete(domid);
    rec.watch?.unsubscribe();
    rec.watch = null;
    const backend = rec.backend;
    rec.backend = null;
    rec.served = null;
    if (backend) {
      backend.stop();
      this.#emit(1, domid, `closed (${why})`);
    }
  }

  /**
   * A console's raw output. With `history`, it starts with what was kept
   * (the boot log), then goes on live, with nothing lost or repeated in
   * between.
   */
  output$(domid: number, options: PrimaryConsoleReadOptions = {}): Observable<Buffer> {
    return new Observable<Buffer>((sub) => {
      // Output arrives on this thread only: the snapshot and the
      // subscription below see the same moment.
      if (options.history === true) {
        const kept = this.history(domid);
        if (kept.length > 0) sub.next(kept);
      }
      return this.#output
        .pipe(
          filter((o) => o.domid === domid),
          map((o) => o.data),
        )
        .subscribe(sub);
    });
  }

  /** A console's output as text, decoded as UTF-8 across chunk boundaries. */
  text$(domid: number, options: PrimaryConsoleReadOptions = {}): Observable<string> {
    return this.output$(domid, options).pipe(decodeUtf8());
  }

  /**
   * A console's output line by line (without the newline; a `\r` before it
   * is dropped too). A line longer than `maxLine` (default
   * {@link MAX_CONSOLE_LINE}) arrives in pieces of that length. With
   * `history`, the kept output comes first; its first line may be the end
   * of a longer one.
   */
  lines$(domid: number, options: PrimaryConsoleReadOptions & { readonly maxLine?: number } = {}): Observable<string> {
    return this.text$(domid, options).pipe(splitLines(options.maxLine ?? MAX_CONSOLE_LINE));
  }

  /** The latest output of a console, up to `historyBytes` (empty for a domain not followed). */
  history(domid: number): Buffer {
    return this.#records.get(domid)?.history.snapshot() ?? Buffer.alloc(0);
  }

  /** Types input into a guest's console; returns the bytes its ring accepted. */
  write(domid: number, input: string | Buffer): number {
    const backend = this.#records.get(domid)?.backend;
    if (!backend) throw new PlatformError('ENOTCONN', `the console of domain ${String(domid)} is not served`);
    return backend.write(typeof input === 'string' ? Buffer.from(input) : input);
  }

  /** Whether a domain's console is being served now. */
  isServed(domid: number): boolean {
    return this.#records.get(domid)?.backend != null;
  }

  /** The domains whose consoles are served now. */
  served(): number[] {
    return [...this.#records.values()].filter((r) => r.backend !== null).map((r) => r.domid);
  }

  /** Where a console's pseudo-terminal is, if it has one. */
  ptyPath(domid: number): string | null {
    return this.#records.get(domid)?.backend?.ptyPath ?? null;
  }

  /** A console's counters. */
  stats(domid: number): ConsoleBackendStats | undefined {
    return this.#records.get(domid)?.backend?.stats();
  }

  /** Every served console's statistics, as device `console-<domid>-0` (as libxl names it). */
  deviceStats(): ConsoleDeviceStats[] {
    return [...this.#records.values()].flatMap((r) => {
      const s = r.backend?.stats();
      return s ? [consoleDeviceStats(r.domid, 0, 'Connected', s)] : [];
    });
  }

  /**
   * Stops serving: every console stops (its published tty emptied, the
   * guest lives on), the watches go, and the output Observables complete.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#subscriptions) s.unsubscribe();
    this.#subscriptions.length = 0;
    const unpublish: Promise<void>[] = [];
    for (const rec of [...this.#records.values()]) {
      const hadPty = rec.backend?.ptyPath != null;
      this.#end(rec.domid, 'the service stopped', false);
      if (hadPty) unpublish.push(this.#unpublishTty(rec));
    }
    await Promise.all(unpublish);
    this.#output.complete();
  }
}
