// What a toolstack (xl/libxl) writes to XenStore to give a guest a home and
// devices, with the same layout and permissions, for the simulated host.
import type { Transaction, XenStore } from '../xenstore/index.js';
import { isXenStoreError } from '../xenstore/index.js';

/** A paravirtual device to create. */
export interface DeviceSpec {
  /** Device type, e.g. `console`, `vbd`, `vif`. */
  readonly type: string;
  /** The guest. */
  readonly frontendDomid: number;
  /** Device id within the guest. */
  readonly devid: number;
  /** The domain serving it (default 0). */
  readonly backendDomid?: number;
  /** Extra backend nodes (e.g. `params`, `mode`). */
  readonly backend?: Readonly<Record<string, string>>;
  /** Extra frontend nodes, owned by the guest. */
  readonly frontend?: Readonly<Record<string, string>>;
  /**
   * Frontend nodes the backend publishes to the guest (the console's `tty`,
   * say), pre-created with these values, owned by the backend domain and
   * read-only to the guest: libxl's "ro_front" nodes since XSA-57. A guest
   * can neither change them nor create them first with values of its own.
   */
  readonly frontendReadOnly?: Readonly<Record<string, string>>;
  /** Frontend directory (default `/local/domain/<fe>/device/<type>/<devid>`). */
  readonly frontendPath?: string;
}

/** Where a device lives in XenStore. */
export interface DevicePaths {
  readonly backendPath: string;
  readonly frontendPath: string;
}

/** The two directories of a device. */
export function devicePaths(spec: DeviceSpec): DevicePaths {
  const be = spec.backendDomid ?? 0;
  return {
    backendPath: `/local/domain/${String(be)}/backend/${spec.type}/${String(spec.frontendDomid)}/${String(spec.devid)}`,
    frontendPath:
      spec.frontendPath ??
      `/local/domain/${String(spec.frontendDomid)}/device/${spec.type}/${String(spec.devid)}`,
  };
}

/**
 * The toolstack's own record of a guest's devices, as libxl keeps
 * `/libxl/<domid>/device/<type>/<devid>/{backend,frontend}`: readable by
 * dom0 only, so tearing a guest down never trusts paths the guest could
 * have written (its frontend's `backend` node is the guest's to change).
 */
function recordPath(domid: number, type?: string, devid?: number): string {
  const base = `/libxl/${String(domid)}/device`;
  if (type === undefined) return base;
  return devid === undefined ? `${base}/${type}` : `${base}/${type}/${String(devid)}`;
}

/** Removes a node and its subtree if it is there (its parent may not be). */
async function removeIfPresent(tx: Transaction | XenStore, path: string): Promise<void> {
  try {
    await tx.rm(path);
  } catch (err) {
    if (!isXenStoreError(err, 'ENOENT')) throw err;
  }
}

/**
 * A guest's home directory as libxl makes it: `/local/domain/<id>` owned by
 * dom0 and readable by the guest, with its name, and a `data` directory the
 * guest owns. What a previous guest of the same id left is removed first.
 */
export async function createDomainHome(xs: XenStore, domid: number, name: string): Promise<void> {
  const home = `/local/domain/${String(domid)}`;
  await xs.transaction(async (tx) => {
    await removeIfPresent(tx, home);
    await tx.write(`${home}/name`, name);
    await tx.setPerms(home, ['n0', `r${String(domid)}`]);
    await tx.setPerms(`${home}/name`, ['n0', `r${String(domid)}`]);
    await tx.mkdir(`${home}/device`);
    await tx.setPerms(`${home}/device`, ['n0', `r${String(domid)}`]);
    await tx.mkdir(`${home}/data`);
    await tx.setPerms(`${home}/data`, [`n${String(domid)}`]);
  });
}

/**
 * Writes a device's backend and frontend directories in one transaction,
 * as libxl does: whatever a previous device of the same name left behind is
 * removed first (stale nodes keep stale permissions: a reused domid would
 * otherwise find `backend/state` unreadable); backend `[n<be>, r<fe>]` with
 * frontend, frontend-id, online=1, state=Initialising; frontend
 * `[n<fe>, r<be>]` with backend, backend-id, state=Initialising; the
 * read-only frontend nodes `[n<be>, r<fe>]`. The transaction is retried
 * until it commits, as libxl retries.
 */
export async function addDevice(xs: XenStore, spec: DeviceSpec): Promise<DevicePaths> {
  const paths = devicePaths(spec);
  const be = String(spec.backendDomid ?? 0);
  const fe = String(spec.frontendDomid);
  const record = recordPath(spec.frontendDomid, spec.type, spec.devid);
  await xs.transaction(async (tx) => {
    const b = paths.backendPath;
    const f = paths.frontendPath;
    await removeIfPresent(tx, b);
    await removeIfPresent(tx, f);
    await tx.mkdir(b);
    await tx.setPerms(b, [`n${be}`, `r${fe}`]);
    const backendNodes: Record<string, string> = {
      frontend: f,
      'frontend-id': fe,
      online: '1',
      state: '1',
      ...spec.backend,
    };
    for (const [k, v] of Object.entries(backendNodes)) await tx.write(`${b}/${k}`, v);
    await tx.mkdir(f);
    await tx.setPerms(f, [`n${fe}`, `r${be}`]);
    const frontendNodes: Record<string, string> = { backend: b, 'backend-id': be, state: '1', ...spec.frontend };
    for (const [k, v] of Object.entries(frontendNodes)) await tx.write(`${f}/${k}`, v);
    for (const [k, v] of Object.entries(spec.frontendReadOnly ?? {})) {
      await tx.write(`${f}/${k}`, v);
      await tx.setPerms(`${f}/${k}`, [`n${be}`, `r${fe}`]);
    }
    await tx.write(`${record}/backend`, b);
    await tx.write(`${record}/frontend`, f);
  });
  return paths;
}

/** Removes a device's directories, as a toolstack does once the device closed. */
export async function removeDevice(xs: XenStore, spec: DeviceSpec): Promise<void> {
  const { backendPath, frontendPath } = devicePaths(spec);
  await xs.transaction(async (tx) => {
    await removeIfPresent(tx, backendPath);
    await removeIfPresent(tx, frontendPath);
    await removeIfPresent(tx, recordPath(spec.frontendDomid, spec.type, spec.devid));
  });
}

/**
 * Removes every device the toolstack gave a guest (both directories of
 * each, from the toolstack's own record), as `xl destroy` does before the
 * domain goes: the backends see their directories vanish and let go.
 * Returns how many devices were removed.
 */
export async function removeDomainDevices(xs: XenStore, domid: number): Promise<number> {
  const base = recordPath(domid);
  return xs.transaction(async (tx) => {
    let removed = 0;
    const types = await tx.list(base).catch((err: unknown) => {
      if (isXenStoreError(err, 'ENOENT')) return [];
      throw err;
    });
    for (const type of types) {
      for (const devid of await tx.list(`${base}/${type}`)) {
        const entry = `${base}/${type}/${devid}`;
        for (const node of ['backend', 'frontend']) {
          const path = await tx.tryRead(`${entry}/${node}`);
          if (path) await removeIfPresent(tx, path);
        }
        removed++;
      }
    }
    await removeIfPresent(tx, `/libxl/${String(domid)}`);
    return removed;
  });
}

/** Sets a device's `online` node (0: hot-unplug). */
export async function setOnline(xs: XenStore, spec: DeviceSpec, online: boolean): Promise<void> {
  await xs.write(`${devicePaths(spec).backendPath}/online`, online ? '1' : '0');
}
