// What a toolstack (xl/libxl) writes to XenStore to give a guest a home and
// devices, with the same layout and permissions, for the simulated host.
import type { XenStore } from '../xenstore/index.js';

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
  /** Extra frontend nodes. */
  readonly frontend?: Readonly<Record<string, string>>;
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
 * A guest's home directory as libxl makes it: `/local/domain/<id>` owned by
 * dom0 and readable by the guest, with its name, and a `data` directory the
 * guest owns.
 */
export async function createDomainHome(xs: XenStore, domid: number, name: string): Promise<void> {
  const home = `/local/domain/${String(domid)}`;
  await xs.transaction(async (tx) => {
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
 * as libxl does: backend `[n<be>, r<fe>]` with frontend, frontend-id,
 * online=1, state=Initialising; frontend `[n<fe>, b<be>]` with backend,
 * backend-id, state=Initialising.
 */
export async function addDevice(xs: XenStore, spec: DeviceSpec): Promise<DevicePaths> {
  const paths = devicePaths(spec);
  const be = String(spec.backendDomid ?? 0);
  const fe = String(spec.frontendDomid);
  await xs.transaction(async (tx) => {
    const b = paths.backendPath;
    const f = paths.frontendPath;
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
    await tx.setPerms(f, [`n${fe}`, `b${be}`]);
    const frontendNodes: Record<string, string> = { backend: b, 'backend-id': be, state: '1', ...spec.frontend };
    for (const [k, v] of Object.entries(frontendNodes)) await tx.write(`${f}/${k}`, v);
  });
  return paths;
}

/** Removes a device's directories, as a toolstack does once the device closed. */
export async function removeDevice(xs: XenStore, spec: DeviceSpec): Promise<void> {
  const { backendPath, frontendPath } = devicePaths(spec);
  await xs.transaction(async (tx) => {
    await tx.rm(backendPath);
    await tx.rm(frontendPath);
  });
}

/** Sets a device's `online` node (0: hot-unplug). */
export async function setOnline(xs: XenStore, spec: DeviceSpec, online: boolean): Promise<void> {
  await xs.write(`${devicePaths(spec).backendPath}/online`, online ? '1' : '0');
}
