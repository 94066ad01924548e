import { MissingPeerError } from '../bus/errors.js';

/**
 * Loads a capability's module, turning "Cannot find package 'bullmq'" into MissingPeerError
 * naming the package to install. Used by the guarded entries (entry.ts) of the subpaths whose
 * library is an optional peer dependency: a static import would fail while Node links the graph,
 * before any code of ours could run, so the entry imports its module dynamically.
 */
function resolvable(pkg: string): boolean {
  try {
    import.meta.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

export async function loadCapability<M>(subpath: string, peers: readonly string[], load: () => Promise<M>): Promise<M> {
  try {
    return await load();
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    if (e?.code === 'ERR_MODULE_NOT_FOUND' && typeof e.message === 'string') {
      const message = e.message;
      if (peers.some((p) => message.includes(`'${p}'`))) {
        // Name every absent peer at once, not one per attempt.
        const missing = peers.filter((p) => message.includes(`'${p}'`) || !resolvable(p));
        throw new MissingPeerError(subpath, missing, { cause: err });
      }
    }
    throw err;
  }
}
