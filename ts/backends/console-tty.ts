// Finding and opening a guest console's pseudo-terminal without letting the
// guest choose what we open. The `tty` node sits in the guest's own
// frontend directory: a guest can delete that directory and write a new
// one with any `tty` it likes (XSA-57), and a node left behind by a closed
// console names a terminal number the kernel hands to the next console. So
// a `tty` is trusted only when the backend published it (owned by a domain
// other than the guest, read-only to the guest), the console is Connected
// (a console device) or the tty's owner is its backend (a primary console,
// which has no xenbus state), and what it names is a pseudo-terminal's
// slave device, checked on the file we opened.
import { closeSync, constants, fstatSync, lstatSync, openSync } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { isatty } from 'node:tty';

import type { Permission, XenStore } from '../xenstore/index.js';
import { XenbusState } from '../xenbus/state.js';

/** A console terminal found in XenStore and checked. */
export interface ConsoleTty {
  /** The pseudo-terminal, e.g. `/dev/pts/3`. */
  readonly path: string;
  /** The node it was read from. */
  readonly node: string;
  /**
   * The backend directory of the console device (Connected when it was
   * read); for a primary console, the one the toolstack wrote for it, or
   * the console directory itself when there is none (xenconsoled's way).
   */
  readonly backendPath: string;
  /** A console device (`device/console/<devid>`) or the guest's primary console (`console`). */
  readonly kind: 'device' | 'primary';
}

/** Linux's major numbers of pseudo-terminal slaves (UNIX98_PTY_SLAVE_MAJOR and the 7 after it). */
const PTS_MAJORS = { first: 136n, last: 143n };

/** Only a pseudo-terminal's name: never a file, a symlink, or another device. */
const PTS_PATH = /^\/dev\/pts\/(0|[1-9][0-9]{0,6})$/;

/** The access a domain has to a node under Xen's rules: the owner all, a listed domain its entry, anyone else the owner entry's. */
function accessOf(perms: readonly Permission[], domid: number): Permission['access'] | 'owner' {
  const [owner, ...rest] = perms;
  if (!owner) return 'none';
  if (owner.domid === domid) return 'owner';
  return rest.find((p) => p.domid === domid)?.access ?? owner.access;
}

/**
 * The checked `tty` of console `devid` of guest `domid`, named by the
 * backend (not owned or writable by the guest) and naming a
 * pseudo-terminal. Console devices live in `device/console/<devid>`, and
 * their backend must be Connected to that directory. For `devid` 0, when
 * the guest has no console device 0, the guest's primary console
 * (`console`, served by xenconsoled or `PrimaryConsoleService`) is looked
 * at instead: it is no xenbus device and has no backend state, so its
 * `tty` counts when it was written by dom0 or by the domain the toolstack
 * made its console backend (`backend/console/<domid>/0` naming it), and is
 * not empty (an ended console's is). Throws an Error saying what is wrong.
 */
export async function findConsoleTty(xs: XenStore, domid: number, devid = 0): Promise<ConsoleTty> {
  const home = await xs.getDomainPath(domid);
  const device = `${home}/device/console/${String(devid)}`;
  const problems: string[] = [];
  const found = await checkCandidate(xs, domid, devid, device, 'device');
  if (typeof found !== 'string') return found;
  problems.push(found);
  // The primary console only stands in for a console device 0 that does
  // not exist: a device that is there but unusable is reported as such,
  // not silently replaced by another terminal.
  if (devid === 0 && !(await xs.exists(device))) {
    const primary = await checkCandidate(xs, domid, devid, `${home}/console`, 'primary');
    if (typeof primary !== 'string') return primary;
    problems.push(primary);
  }
  throw new Error(`domain ${String(domid)} has no usable console ${String(devid)}: ${problems.join('; ')}`);
}

/** The console terminal of one frontend directory, or why there is none. */
async function checkCandidate(xs: XenStore, domid: number, devid: number, dir: string, kind: 'device' | 'primary'): Promise<ConsoleTty | string> {
  const node = `${dir}/tty`;
  // One snapshot: the value, its permissions and the backend's state as
  // they were together.
  return xs.transaction(async (tx) => {
    const value = await tx.tryRead(node);
    if (value === undefined) return `${node} does not exist`;
    const perms = await tx.getPerms(node);
    const guest = accessOf(perms, domid);
    if (guest === 'owner') return `${node} was written by the guest itself, not by its backend`;
    if (guest === 'write' || guest === 'both') return `${node} is writable by the guest`;
    const owner = perms[0]?.domid ?? 0;
    const backendPath = `${await xs.getDomainPath(owner)}/backend/console/${String(domid)}/${String(devid)}`;
    const frontend = await tx.tryRead(`${backendPath}/frontend`);
    if (kind === 'device') {
      const state = await tx.tryRead(`${backendPath}/state`);
      if (frontend !== dir) return `${node} belongs to no console of domain ${String(owner)}'s backends`;
      if (state !== String(XenbusState.Connected)) {
        return `console ${String(devid)} is not connected (backend state ${state ?? 'missing'})`;
      }
      if (value === '') return `${node} names no terminal`;
    } else {
      // dom0 is where the toolstack and xenconsoled run; any other owner
      // must be the console backend the toolstack named, or a guest the
      // console's owner let into its directory could name a terminal.
      if (owner !== 0 && frontend !== dir) return `${node} was written by domain ${String(owner)}, which is not its console backend`;
      if (value === '') return `${node} names no terminal (the primary console is not served)`;
    }
    if (!PTS_PATH.test(value)) return `${node} names ${JSON.stringify(value)}, not a pseudo-terminal`;
    return { path: value, node, backendPath: kind === 'device' || frontend === dir ? backendPath : dir, kind };
  });
}

function ptsMajor(st: BigIntStats): bigint {
  // Linux's dev_t: major in bits 8-19 and 32-43.
  return ((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn);
}

function isPts(st: BigIntStats): boolean {
  const major = ptsMajor(st);
  return st.isCharacterDevice() && major >= PTS_MAJORS.first && major <= PTS_MAJORS.last;
}

/**
 * Opens a pseudo-terminal slave for reading and writing, refusing anything
 * else: the path must look like one, be a character device of the
 * pseudo-terminal majors before it is opened (opening some devices has
 * effects of its own), and the opened file must be that same device and a
 * terminal. Never becomes the process's controlling terminal. Returns the
 * file descriptor.
 */
export function openConsoleTerminal(path: string): number {
  if (!PTS_PATH.test(path)) throw new Error(`${path} is not a pseudo-terminal`);
  const before = lstatSync(path, { bigint: true });
  if (!isPts(before)) throw new Error(`${path} is not a pseudo-terminal device`);
  const fd = openSync(path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NOFOLLOW);
  try {
    const after = fstatSync(fd, { bigint: true });
    if (!isPts(after) || after.rdev !== before.rdev || after.ino !== before.ino) {
      throw new Error(`${path} changed while it was opened`);
    }
    if (!isatty(fd)) throw new Error(`${path} is not a terminal`);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
