// The embedded simulated host: a XenStore daemon and a simulated hypervisor
// with dom0, and a toolstack that creates and destroys guests as xl would.
// What the demo, the tests and backend authors' own tests run on.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DomainWatcher, simDomainSource } from '../lifecycle/index.js';
import { Platform, SimHypervisor } from '../platform/index.js';
import type { SimHost } from '../platform/index.js';
import { XenStore, Xenstored } from '../xenstore/index.js';
import { SimBlockFrontend } from './block-frontend.js';
import { SimConsoleFrontend } from './console-frontend.js';
import { SimFrontend } from './frontend.js';
import type { FrontendHooks } from './frontend.js';
import { SimNetFrontend } from './net-frontend.js';
import type { SimNetFrontendOptions } from './net-frontend.js';
import { SimPrimaryConsoleFrontend, writePrimaryConsoleNodes } from './primary-console-frontend.js';
import { forget, removeAtExit } from './temp-dirs.js';
import { addDevice, createDomainHome, removeDomainDevices } from './toolstack.js';

/** How to run the simulated host. */
export interface SimulatedHostOptions {
  /** Directory for the sockets (default: a new temporary one, removed on stop). */
  readonly dir?: string;
  /** Log the daemon to stderr (default false). */
  readonly log?: boolean;
}

/** A device of any type to give a guest (see `SimulatedHost.addDevice`). */
export interface CustomDeviceSpec {
  /** Device id (default 0). */
  readonly devid?: number;
  /** The backend's domain (default 0). */
  readonly backendDomid?: number;
  /** Nodes of the backend directory, beside those every device has. */
  readonly backend?: Readonly<Record<string, string>>;
  /** Nodes of the frontend directory, beside those every device has. */
  readonly frontend?: Readonly<Record<string, string>>;
  /** Frontend nodes the backend writes and the guest may only read. */
  readonly frontendReadOnly?: Readonly<Record<string, string>>;
  /** What the guest's side does at each step of the handshake. */
  readonly hooks?: FrontendHooks;
}

/** A disk to give a guest (see `SimulatedHost.addDisk`). */
export interface DiskSpec {
  /** What to serve: the backend's `params` (a path, or `memory:<size>`). */
  readonly params: string;
  /** `mode` r instead of w. */
  readonly readOnly?: boolean;
  /** Device number (default 51712, xvda). */
  readonly devid?: number;
  readonly backendDomid?: number;
  /** The ring size the guest asks for (2^order pages; default 0). */
  readonly ringPageOrder?: number;
  /** The slot layout the guest uses (default the native one). */
  readonly protocol?: 'x86_64-abi' | 'x86_32-abi';
  /** The most queues the guest asks for (default 1). */
  readonly queues?: number;
  /** Whether the guest offers persistent grants (default true, as Linux). */
  readonly persistent?: boolean;
  /** Requests the guest keeps in flight at most (default: as many as the ring has slots). */
  readonly queueDepth?: number;
  /** The most segments the guest puts in an indirect request (default: what the backend offers). */
  readonly maxIndirectSegments?: number;
  /** `device-type`, as xl writes it (default `disk`). */
  readonly deviceType?: 'disk' | 'cdrom';
  /**
   * The device type in XenStore, which the toolstack picks for the backend
   * it wants (default `vbd`; libxl writes `qdisk` for QEMU's, `vbd3` for
   * tapdisk's): the guest's frontend is the same whatever it is.
   */
  readonly backendType?: string;
}

/** A network interface to give a guest (see `SimulatedHost.addNic`). */
export interface NicSpec extends SimNetFrontendOptions {
  /** Device id (default 0: the guest's eth0). */
  readonly devid?: number;
  /** The bridge the toolstack names (`bridge`; default `xenbr0`). */
  readonly bridge?: string;
}

/** A running guest. */
export interface Guest {
  readonly domid: number;
  readonly name: string;
  /** The guest's own XenStore connection (on its domain socket). */
  readonly xs: XenStore;
}

/** XenStore, a hypervisor with dom0, and a toolstack. */
export class SimulatedHost {
  readonly #guests = new Map<number, Guest>();
  readonly #consoles = new Map<number, SimConsoleFrontend[]>();
  readonly #primaryConsoles = new Map<number, SimPrimaryConsoleFrontend>();
  readonly #disks = new Map<number, SimBlockFrontend[]>();
  readonly #nics = new Map<number, SimNetFrontend[]>();
  readonly #devices = new Map<number, SimFrontend[]>();
  readonly #ownDir: boolean;

  /** Domain states, for lifecycles and the xenbus registry's teardown. */
  readonly domains: DomainWatcher;

  private constructor(
    readonly dir: string,
    ownDir: boolean,
    readonly xenstored: Xenstored,
    readonly hypervisor: SimHypervisor,
    /** The hypervisor's client: where simulated guests get their grant tables and event channels. */
    readonly sim: SimHost,
    /** Dom0's platform, for backends: its event channels, grant mapper and event loop. */
    readonly platform: Platform,
    readonly dom0: XenStore,
  ) {
    this.#ownDir = ownDir;
    this.domains = new DomainWatcher(simDomainSource(hypervisor));
  }

  /** Starts XenStore and the hypervisor (with dom0). */
  static async start(options: SimulatedHostOptions = {}): Promise<SimulatedHost> {
    const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'xenrx-host-'));
    // Ours, not the caller's: gone at exit, even if stop() never runs.
    if (options.dir === undefined) removeAtExit(dir);
    const xenstored = Xenstored.start({ socket: join(dir, 'xenstored.sock'), log: options.log ?? false });
    const hypervisor = new SimHypervisor();
    hypervisor.createDomain({ domid: 0 });
    const dom0 = await XenStore.connect({ path: xenstored.socket });
    await dom0.write('/local/domain/0/name', 'Domain-0');
    const sim = hypervisor.host();
    return new SimulatedHost(dir, options.dir === undefined, xenstored, hypervisor, sim, Platform.simulated(sim, 0), dom0);
  }

  /** The XenStore socket (for XENSTORED_PATH). */
  get socket(): string {
    return this.xenstored.socket;
  }

  /**
   * Creates a guest as xl does: the domain (paused while it is built), its
   * XenStore home, INTRODUCE, then unpause. The guest's XenStore connection
   * uses its own domain socket, so its permissions are a guest's.
   */
  async createGuest(domid: number, name: string, options: { readonly pages?: number } = {}): Promise<Guest> {
    if (domid <= 0) throw new RangeError('guests have domain ids from 1');
    this.hypervisor.createDomain({ domid, paused: true, ...(options.pages ? { pages: options.pages } : {}) });
    await createDomainHome(this.dom0, domid, name);
    await this.dom0.introduce(domid);
    const xs = await XenStore.connect({ path: this.xenstored.domainSocket(domid), reconnect: false });
    this.hypervisor.unpauseDomain(domid);
    const guest = { domid, name, xs };
    this.#guests.set(domid, guest);
    return guest;
  }

  /**
   * Gives a guest a PV console, as xl does (device `console`, served by
   * `backendDomid`), and starts the guest's side of it. The `tty` node the
   * backend publishes is pre-created read-only to the guest (XSA-57).
   */
  async addConsole(guest: Guest, devid = 0, backendDomid = 0): Promise<SimConsoleFrontend> {
    const { frontendPath } = await addDevice(this.dom0, {
      type: 'console',
      frontendDomid: guest.domid,
      devid,
      backendDomid,
      backend: { protocol: 'vt100' },
      frontendReadOnly: { tty: '' },
    });
    const fe = await SimConsoleFrontend.attach(this.sim, guest.xs, guest.domid, frontendPath, backendDomid);
    const list = this.#consoles.get(guest.domid) ?? [];
    list.push(fe);
    this.#consoles.set(guest.domid, list);
    return fe;
  }

  /**
   * Gives a guest its primary console, as the domain builder, libxl and a
   * PV guest kernel do: the guest's page in its reserved grant entry 0
   * (GNTTAB_RESERVED_CONSOLE) for `backendDomid`, an unbound port for it,
   * and `/local/domain/<domid>/console` with `ring-ref` (the page's frame),
   * `port`, `type` = `xenconsoled`, `output`, `limit` and an empty `tty`,
   * all read-only to the guest (XSA-57). No xenbus device: a console
   * backend (xenconsoled, `PrimaryConsoleService`) finds it by watching the
   * domains. The guest can write at once; output waits in the ring.
   */
  async addPrimaryConsole(guest: Guest, backendDomid = 0): Promise<SimPrimaryConsoleFrontend> {
    const fe = SimPrimaryConsoleFrontend.create(this.sim, guest.domid, backendDomid);
    try {
      await writePrimaryConsoleNodes(this.dom0, guest.domid, { ringRef: String(fe.frame), port: String(fe.port), backendDomid });
    } catch (err) {
      await fe.close();
      throw err;
    }
    this.#primaryConsoles.set(guest.domid, fe);
    return fe;
  }

  /**
   * Gives a guest a PV disk, as xl does (device `vbd`, `params` naming what
   * to serve: a path, or `memory:<size>` for the default storage of
   * `BlockService`), and starts the guest's side of it. Resolves once the
   * guest's frontend connected.
   */
  async addDisk(guest: Guest, disk: DiskSpec): Promise<SimBlockFrontend> {
    const devid = disk.devid ?? 51712; // xvda, as Linux numbers it
    const backendDomid = disk.backendDomid ?? 0;
    const { frontendPath } = await addDevice(this.dom0, {
      type: disk.backendType ?? 'vbd',
      frontendDomid: guest.domid,
      devid,
      backendDomid,
      backend: { params: disk.params, mode: disk.readOnly === true ? 'r' : 'w', type: 'phy', 'device-type': disk.deviceType ?? 'disk' },
      frontend: { 'virtual-device': String(devid), 'device-type': disk.deviceType ?? 'disk' },
    });
    const fe = await SimBlockFrontend.attach(this.sim, guest.xs, guest.domid, frontendPath, {
      backendDomid,
      ...(disk.ringPageOrder !== undefined ? { ringPageOrder: disk.ringPageOrder } : {}),
      ...(disk.protocol !== undefined ? { protocol: disk.protocol } : {}),
      ...(disk.queues !== undefined ? { queues: disk.queues } : {}),
      ...(disk.persistent !== undefined ? { persistent: disk.persistent } : {}),
      ...(disk.queueDepth !== undefined ? { queueDepth: disk.queueDepth } : {}),
      ...(disk.maxIndirectSegments !== undefined ? { maxIndirectSegments: disk.maxIndirectSegments } : {}),
    });
    const list = this.#disks.get(guest.domid) ?? [];
    list.push(fe);
    this.#disks.set(guest.domid, list);
    await fe.waitConnected();
    return fe;
  }

  /**
   * Gives a guest a PV network interface, as xl does (device `vif`: the
   * backend directory with `mac`, `bridge`, `script`, `type`; the
   * frontend's with `mac`), and starts the guest's side of it. The MAC is
   * Xen's 00:16:3e prefix with the domain id and device id, unless given.
   * Resolves once the guest's frontend connected.
   */
  async addNic(guest: Guest, nic: NicSpec = {}): Promise<SimNetFrontend> {
    const devid = nic.devid ?? 0;
    const backendDomid = nic.backendDomid ?? 0;
    const mac = nic.mac ?? `00:16:3e:${hex(guest.domid >> 8)}:${hex(guest.domid)}:${hex(devid)}`;
    const { frontendPath } = await addDevice(this.dom0, {
      type: 'vif',
      frontendDomid: guest.domid,
      devid,
      backendDomid,
      backend: { mac, bridge: nic.bridge ?? 'xenbr0', script: 'vif-bridge', type: 'vif', handle: String(devid) },
      frontend: { mac, handle: String(devid) },
    });
    const fe = await SimNetFrontend.attach(this.sim, guest.xs, guest.domid, frontendPath, { ...nic, mac, backendDomid });
    const list = this.#nics.get(guest.domid) ?? [];
    list.push(fe);
    this.#nics.set(guest.domid, list);
    await fe.waitConnected();
    return fe;
  }

  /**
   * Gives a guest a device of any type, as a toolstack does for the types
   * it knows (see `addDevice`): the backend directory with `backend`'s
   * nodes, the frontend's with `frontend`'s, and `frontendReadOnly`'s
   * nodes pre-created read-only to the guest (for what the backend
   * publishes to it). Then starts the guest's side: a `SimFrontend` that
   * follows the handshake, calling `hooks` at each step. This is how a
   * device type of your own is tested without Xen.
   */
  async addDevice(guest: Guest, type: string, device: CustomDeviceSpec = {}): Promise<SimFrontend> {
    const { frontendPath } = await addDevice(this.dom0, {
      type,
      frontendDomid: guest.domid,
      devid: device.devid ?? 0,
      backendDomid: device.backendDomid ?? 0,
      ...(device.backend ? { backend: device.backend } : {}),
      ...(device.frontend ? { frontend: device.frontend } : {}),
      ...(device.frontendReadOnly ? { frontendReadOnly: device.frontendReadOnly } : {}),
    });
    const fe = await SimFrontend.attach(guest.xs, frontendPath, device.hooks ?? {});
    const list = this.#devices.get(guest.domid) ?? [];
    list.push(fe);
    this.#devices.set(guest.domid, list);
    return fe;
  }

  /**
   * Destroys a guest as `xl destroy` does: its devices' directories
   * removed (so their backends let go), the domain destroyed, released from
   * XenStore, its home removed. Its domain id can then be used again.
   */
  async destroyGuest(domid: number): Promise<void> {
    const guest = this.#guests.get(domid);
    this.#guests.delete(domid);
    for (const fe of this.#consoles.get(domid) ?? []) fe.detach();
    this.#consoles.delete(domid);
    this.#primaryConsoles.get(domid)?.detach();
    this.#primaryConsoles.delete(domid);
    for (const fe of this.#disks.get(domid) ?? []) fe.detach();
    this.#disks.delete(domid);
    for (const fe of this.#nics.get(domid) ?? []) fe.detach();
    this.#nics.delete(domid);
    for (const fe of this.#devices.get(domid) ?? []) fe.detach();
    this.#devices.delete(domid);
    guest?.xs.close();
    await removeDomainDevices(this.dom0, domid);
    this.hypervisor.destroyDomain(domid);
    await this.dom0.release(domid).catch(() => undefined);
    await this.dom0.rm(`/local/domain/${String(domid)}`).catch(() => undefined);
  }

  /** The guests running now. */
  guests(): Guest[] {
    return [...this.#guests.values()];
  }

  /** Stops everything. */
  async stop(): Promise<void> {
    for (const domid of [...this.#guests.keys()]) await this.destroyGuest(domid).catch(() => undefined);
    this.dom0.close();
    this.platform.stop();
    this.xenstored.stop();
    if (this.#ownDir) {
      rmSync(this.dir, { recursive: true, force: true });
      forget(this.dir);
    }
  }
}

/** Two lowercase hex digits of a byte. */
function hex(n: number): string {
  return (n & 0xff).toString(16).padStart(2, '0');
}
