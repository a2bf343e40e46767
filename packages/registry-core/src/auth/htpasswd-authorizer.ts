/** The `auth.htpasswd` scheme as an {@link Authorizer}: every request needs valid Basic credentials. */
import type { IncomingHttpHeaders } from 'node:http';
import { RegistryError } from '../errors.js';
import type { Authorizer, Identity } from './authorizer.js';
import { HtpasswdAuthenticator } from './htpasswd.js';

/** Authorizes any authenticated user for any access, as distribution's htpasswd auth does. */
export class HtpasswdAuthorizer implements Authorizer {
  constructor(private readonly authenticator: HtpasswdAuthenticator) {}

  async authorize(headers: IncomingHttpHeaders): Promise<Identity> {
    const result = await this.authenticator.authenticate(headers.authorization);
    if (!result) {
      throw new RegistryError('UNAUTHORIZED', 'authentication required', { headers: { 'WWW-Authenticate': this.authenticator.challenge() } });
    }
    return { user: result.user };
  }
}
