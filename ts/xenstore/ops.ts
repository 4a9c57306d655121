// Node operations, shared by the client and its transactions.
import type { NativeXsClient } from '../native.js';
import { XenStoreError } from './errors.js';
import { formatPermission, parsePermission } from './perms.js';
import type { Permission } from './perms.js';

/** Runs a native call, turning its failure into a XenStoreError. */
export async function call<T>(operation: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw XenStoreError.fromNative(err, operation);
  }
}

/** Reads, writes and lists nodes, outside or inside a transaction. */
export abstract class NodeOps {
  protected abstract readonly native: NativeXsClient;
  /** Transaction handle, or undefined outside a transaction. */
  protected abstract readonly tx: number | undefined;

  /** Reads a node's value as UTF-8 text (`'buffer'`: as bytes). */
  read(path: string): Promise<string>;
  read(path: string, encoding: 'utf8'): Promise<string>;
  read(path: string, encoding: 'buffer'): Promise<Buffer>;
  async read(path: string, encoding: 'utf8' | 'buffer' = 'utf8'): Promise<string | Buffer> {
    const value = await call(`read ${path}`, () => this.native.read(path, this.tx));
    return encoding === 'buffer' ? value : value.toString('utf8');
  }

  /** Reads a node's value, or `undefined` if it does not exist. */
  async tryRead(path: string): Promise<string | undefined> {
    try {
      return await this.read(path);
    } catch (err) {
      if (err instanceof XenStoreError && err.code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Writes a value, creating the node and missing parents. */
  write(path: string, value: string | Buffer): Promise<void> {
    return call(`write ${path}`, () => this.native.write(path, value, this.tx));
  }

  /** Creates a node (and missing parents) if it does not exist. */
  mkdir(path: string): Promise<void> {
    return call(`mkdir ${path}`, () => this.native.mkdir(path, this.tx));
  }

  /** Removes a node and its subtree; a missing node is fine if its parent exists. */
  rm(path: string): Promise<void> {
    return call(`rm ${path}`, () => this.native.rm(path, this.tx));
  }

  /** Names of a node's children. */
  list(path: string): Promise<string[]> {
    return call(`list ${path}`, () => this.native.directory(path, this.tx));
  }

  /** Whether a node exists (and can be read). */
  async exists(path: string): Promise<boolean> {
    return (await this.tryRead(path)) !== undefined;
  }

  /** A node's permissions; the first entry is the owner. */
  async getPerms(path: string): Promise<Permission[]> {
    const list = await call(`getPerms ${path}`, () => this.native.getPerms(path, this.tx));
    return list.map(parsePermission);
  }

  /** Sets a node's permissions (entries or `r5`-style strings). */
  setPerms(path: string, perms: readonly (Permission | string)[]): Promise<void> {
    const list = perms.map((p) => (typeof p === 'string' ? formatPermission(parsePermission(p)) : formatPermission(p)));
    return call(`setPerms ${path}`, () => this.native.setPerms(path, list, this.tx));
  }
}
