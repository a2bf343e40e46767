/**
 * Grant signing keys kept in the state database (`grants.keystore: database`), so that servers sharing a
 * PostgreSQL database share their keys without a shared folder: the backend a {@link GrantKeyStore} reads
 * and writes through.
 */
import type { GrantKeyBackend, StoredGrantKey } from '@cascade/downstream';
import type { StateRepository } from './repository.js';

const PREFIX = 'database:';

/** A {@link GrantKeyBackend} on the `grant_keys` table of a state repository. */
export class StateKeyBackend implements GrantKeyBackend {
  constructor(private readonly state: StateRepository) {}

  async list(): Promise<StoredGrantKey[]> {
    return (await this.state.listGrantKeys()).map((k) => ({ pem: k.pem, createdAt: k.createdAt, ref: `${PREFIX}${k.kid}` }));
  }

  async add(kid: string, pem: string, createdAt: number): Promise<string> {
    await this.state.addGrantKey({ kid, pem, createdAt });
    return `${PREFIX}${kid}`;
  }

  async remove(ref: string): Promise<void> {
    if (ref.startsWith(PREFIX)) await this.state.deleteGrantKey(ref.slice(PREFIX.length));
  }
}
