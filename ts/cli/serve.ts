// `xenrx serve`: what a dom0 runs. It connects to the system's XenStore (or
// --socket), opens the platform (real Xen where /dev/xen/evtchn exists, or
// an embedded simulated host with --simulated, to try it), registers the
// block and console backends (and the network backend, when --types names
// vif), and serves every guest's devices of those types (and, with
// --primary-consoles, every guest's primary console) until SIGINT or
// SIGTERM, then disconnects them cleanly.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';

import type { StatsSource } from '../stats/index.js';
import type { LogLevel } from '../xenbus/index.js';
import { integer } from './args.js';
import { untilStopped } from './signals.js';

const TYPES = ['vbd', 'console', 'vif'] as const;
type DeviceType = (typeof TYPES)[number];
/**
 * Served unless --types says otherwise. Not vif: where Linux's netback
 * serves the guests' network interfaces (most dom0s), two backends would
 * fight over them; ask for it.
 */
const DEFAULT_TYPES: readonly DeviceType[] = ['vbd', 'console'];

interface Options {
  socket?: string;
  hypervisor?: string;
  simulated: boolean;
  guests: number;
  types: DeviceType[];
  debug: number;
  pty: boolean;
  primaryConsoles: boolean;
  maxQueues?: number;
  pollUs: number;
  domainPoll: number;
  metrics?: string | true;
  stateDir?: string;
  takeover: boolean;
  vifPath?: 'switch' | 'tap';
}

function deviceTypes(value: string): DeviceType[] {
  const list = value.split(',').map((s) => s.trim());
  for (const t of list) {
    if (!(TYPES as readonly string[]).includes(t)) throw new InvalidArgumentError(`unknown device type ${JSON.stringify(t)} (known: ${TYPES.join(', ')})`);
  }
  return list as DeviceType[];
}

function vifPath(value: string): 'switch' | 'tap' {
  if (value !== 'switch' && value !== 'tap') throw new InvalidArgumentError(`unknown vif path ${JSON.stringify(value)} (switch or tap)`);
  return value;
}

function log(line: string): void {
  console.log(`xenrx serve: ${line}`);
}

/** Adds the `serve` subcommand. */
export function addServeCommand(program: Command): void {
  program
    .command('serve')
    .description("serve guests' devices until SIGTERM (see --types)")
    .option('--socket <path>', 'XenStore socket (default: $XENSTORED_PATH, /run/xenstored/socket, /dev/xen/xenbus)')
    .option('--simulated', 'run on an embedded simulated host (XenStore and hypervisor) instead of Xen', false)
    .option('--hypervisor <socket>', "instead of Xen, the simulated hypervisor another process serves on this socket (SimHypervisor.serve), with --socket naming that host's XenStore")
    .option('--guests <n>', 'with --simulated: start this many guests, each with a console and a 64 MiB disk in memory', integer('a guest count', 0, 64), 0)
    .option('--types <list>', `device types to serve, comma-separated (${TYPES.join(', ')}; default ${DEFAULT_TYPES.join(',')})`, deviceTypes, [...DEFAULT_TYPES])
    .option(
      '--vif-path <path>',
      "where vifs' packets go: tap (a TAP device vif<domid>.<devid> in the bridge the toolstack names; the default on Xen) or switch (an in-process switch between the guests; the default with --simulated)",
      vifPath,
    )
    .option('--pty', 'serve each console on a pseudo-terminal too (for xenrx console)', false)
    .option(
      '--primary-consoles',
      "serve guests' primary consoles too, as xenconsoled does (only where xenconsoled does not run); with --simulated, each guest gets one, which echoes what is typed",
      false,
    )
    .option('--max-queues <n>', 'the most queues (rings) a guest disk may use (default: one per CPU)', integer('a queue count', 1, 64))
    .option(
      '--poll-us <micros>',
      "how long each disk queue polls its ring after taking requests instead of waiting for the guest's next event (default 0: never); keeps a CPU busy meanwhile, saves a wake-up per request",
      integer('a time in microseconds', 0, 60_000_000),
      0,
    )
    .option('--domain-poll <ms>', 'on Xen, how often the domain list is read besides the XenStore watches (pause and unpause fire none)', integer('a period in ms', 10, 60_000), 1000)
    .option(
      '--state-dir <dir>',
      'where each disk queue keeps its journal, so that xenrx serve started again after a crash takes the disks over without the guests noticing (default $XDG_RUNTIME_DIR/xenrx or /run/xenrx; none with --simulated)',
    )
    .option('--takeover', 'take the disks over from the xenrx serve running now (it hands them over and exits): an upgrade the guests only see as a pause', false)
    .option('--metrics [address]', 'serve statistics over HTTP: /metrics (Prometheus), /healthz and /stats (for xenrx top), on host:port (default 127.0.0.1:9469)')
    .option('--debug <level>', 'log level: 0 errors, 1 device changes (default), 2 more, 3 everything', integer('a log level', 0, 3), 1)
    .action(async (opts: Options) => {
      if (opts.guests > 0 && !opts.simulated) throw new InvalidArgumentError('--guests needs --simulated');
      if (opts.hypervisor !== undefined && opts.simulated) throw new InvalidArgumentError('--hypervisor and --simulated exclude each other');
      if (opts.takeover && opts.simulated) throw new InvalidArgumentError('--takeover and --simulated exclude each other (an embedded host dies with its process)');
      // Loaded here: --help must work without the native addon.
      const { BlockService, ConsoleService, NetService, PrimaryConsoleService } = await import('../backends/index.js');
      const { DomainWatcher, xenDomainSource } = await import('../lifecycle/index.js');
      const { logDomains } = await import('./serve-domains.js');
      const { Platform, SimHost } = await import('../platform/index.js');
      const { SimulatedHost } = await import('../simhost/index.js');
      const { XenStore } = await import('../xenstore/index.js');
      const { XenbusRegistry, xenbusStateName } = await import('../xenbus/index.js');

      const host = opts.simulated ? await SimulatedHost.start() : null;
      const xs = host ? host.dom0 : await XenStore.connect({ path: opts.socket });
      const platform = host
        ? host.platform
        : opts.hypervisor !== undefined
          ? Platform.simulated(SimHost.connect(opts.hypervisor))
          : Platform.xen();
      log(`XenStore ${host ? `${host.socket} (simulated host)` : (opts.socket ?? 'found as libxenstore does')}, platform ${platform.kind} (events by ${platform.eventWait}), backend domain ${String(platform.domid)}`);
      // Which domains live, so the devices of a dead one are torn down: the
      // simulated host's, or Xen's read through libxenctrl.
      const domains = host ? host.domains : platform.kind === 'xen' ? new DomainWatcher(xenDomainSource(xs, { pollMs: opts.domainPoll })) : null;
      const domainLog = domains && opts.debug >= 1 ? logDomains(domains, log) : null;
      const registry = await XenbusRegistry.create(xs, {
        ...(domains ? { domains } : {}),
        // --debug is parsed as an integer from 0 to 3.
        debug: opts.debug as LogLevel,
        logger: (e) => {
          if (e.level <= opts.debug) (e.level === 0 ? console.error : console.log)(`xenrx serve: ${e.device ?? 'xenbus'}: ${e.message}`);
        },
      });
      // An embedded host dies with the process: nothing to take over.
      const stateDir = opts.stateDir ?? (host ? undefined : join(process.env['XDG_RUNTIME_DIR'] || '/run', 'xenrx'));
      const disks = new BlockService({
        platform,
        ...(opts.maxQueues !== undefined ? { maxQueues: opts.maxQueues } : {}),
        pollMicros: opts.pollUs,
        ...(stateDir !== undefined ? { stateDir } : {}),
      });
      if (opts.pollUs > 0) log(`disk queues polling rings for ${String(opts.pollUs)} us after taking requests`);
      const consoles = new ConsoleService({ platform, pty: opts.pty });
      const path = opts.vifPath ?? (platform.kind === 'xen' ? 'tap' : 'switch');
      const nets = new NetService({
        platform,
        path: () => path,
        ...(opts.maxQueues !== undefined ? { maxQueues: Math.min(opts.maxQueues, 16) } : {}),
        ...(stateDir !== undefined ? { stateDir } : {}),
      });
      // The primary consoles join the statistics' sources once their
      // service runs.
      const sources: StatsSource[] = [disks, consoles, nets];
      // Everything is loaded: the running process hands over only now, so
      // that the guests wait for little more than the registry's scan.
      const takeover = await import('./serve-takeover.js');
      const serveMetrics = opts.metrics !== undefined ? await import('./serve-metrics.js') : null;
      if (opts.takeover && stateDir !== undefined) {
        mkdirSync(stateDir, { recursive: true, mode: 0o700 });
        await takeover.takeOverFrom(stateDir, log);
      }
      // After the takeover (the old process held the address until it
      // exited), before the first device is found.
      const metrics =
        serveMetrics && opts.metrics !== undefined
          ? await serveMetrics.startServeMetrics({ address: opts.metrics, xs, platform, sources, devices$: registry.devices$ })
          : null;
      if (metrics) log(`statistics on ${metrics.url}/metrics, ${metrics.url}/healthz and ${metrics.url}/stats`);
      if (opts.types.includes('vbd')) await registry.register('vbd', disks.ops);
      if (opts.types.includes('console')) await registry.register('console', consoles.ops);
      if (opts.types.includes('vif')) await registry.register('vif', nets.ops);
      // Primary consoles are no xenbus devices: their own service finds
      // them by watching the domains.
      const primaries = opts.primaryConsoles
        ? await PrimaryConsoleService.start({
            xs,
            platform,
            pty: opts.pty,
            ...(domains ? { domains } : {}),
            // Each console's latest output outlives a restart, as its disks do.
            ...(stateDir !== undefined ? { historyDir: stateDir } : {}),
            logger: (e) => {
              if (e.level <= opts.debug) {
                (e.level === 0 ? console.error : console.log)(`xenrx serve: ${e.domid === null ? 'primary consoles' : `console of domain ${String(e.domid)}`}: ${e.message}`);
              }
            },
          })
        : null;
      if (primaries) sources.push(primaries);
      // Each device's backend state as it changes (not every step of the
      // machine).
      const last = new Map<string, string>();
      const states = registry.devices$.subscribe((d) => {
        const line = `${xenbusStateName(d.beState)}${d.phase === 'active' ? '' : ` (${d.phase})`}`;
        if (last.get(d.name) === line) return;
        last.set(d.name, line);
        if (d.phase === 'removed') last.delete(d.name);
        if (opts.debug >= 1) log(`${d.name}: ${line}`);
      });
      // SIGHUP: an operator grew an image or volume; measure them again.
      const onHangup = (): void => {
        disks.refreshSizes().then(
          (resized) => log(`SIGHUP: ${resized.length === 0 ? 'no disk changed size' : resized.map((r) => `${r.name} now ${String(r.sectors)} sectors`).join(', ')}`),
          (err: unknown) => console.error(`xenrx serve: SIGHUP: ${String(err)}`),
        );
      };
      process.on('SIGHUP', onHangup);
      // Listen for signals before saying we are ready for them.
      const stopped = untilStopped();
      if (stateDir !== undefined) {
        // A process taking over asks with SIGUSR2: the disks are handed
        // over (nothing written to XenStore) and this process exits.
        process.on(takeover.HAND_OVER_SIGNAL, () => {
          const queues = disks.handOver();
          const vifQueues = nets.handOver();
          log(`${takeover.HAND_OVER_SIGNAL}: ${String(queues)} disk queue${queues === 1 ? '' : 's'} and ${String(vifQueues)} vif queue${vifQueues === 1 ? '' : 's'} handed over; exiting`);
          process.exit(0);
        });
        mkdirSync(stateDir, { recursive: true, mode: 0o700 });
        takeover.claimStateDir(stateDir);
      }
      log(`serving ${opts.types.join(', ')}${primaries ? ', primary consoles' : ''}`);

      if (host) {
        for (let domid = 1; domid <= opts.guests; domid++) {
          const guest = await host.createGuest(domid, `guest${String(domid)}`);
          if (opts.types.includes('console')) await host.addConsole(guest);
          if (opts.types.includes('vbd')) await host.addDisk(guest, { params: 'memory:64M', ringPageOrder: 2 });
          if (opts.types.includes('vif')) await host.addNic(guest);
          if (primaries) {
            // A boot line for a late reader, and an echo of what is typed,
            // so that `xenrx console` shows both ways work.
            const fe = await host.addPrimaryConsole(guest);
            // A terminal's Enter is a bare CR: echoed as CR LF, as a shell would.
            fe.input$.subscribe((typed) => void fe.writeAll(Buffer.from(typed.toString('latin1').replace(/\r(?!\n)/g, '\r\n'), 'latin1')));
            await fe.writeAll(`guest${String(domid)}: simulated guest booted; its console echoes what you type\r\n`);
          }
          log(`guest${String(domid)} started`);
        }
      }

      const signal = await stopped;
      process.off('SIGHUP', onHangup);
      // Every device is taken down as on a backend's removal: Closing,
      // queues stopped, rings unmapped, ports closed.
      log(`${signal ?? 'stopped'}: disconnecting`);
      await metrics?.close();
      await registry.close();
      await primaries?.close();
      states.unsubscribe();
      domainLog?.unsubscribe();
      if (host) await host.stop();
      else {
        xs.close();
        platform.stop();
      }
      if (stateDir !== undefined) takeover.releaseStateDir(stateDir);
      log('stopped cleanly');
    });
}
