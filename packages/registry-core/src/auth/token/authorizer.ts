/**
 * The `auth.token` scheme as an {@link Authorizer}: every request needs a Bearer token signed by a trusted
 * key, issued by `issuer` for `service`, and granting the access the request needs.
 *
 * A token without the needed actions is answered like a missing one, 401 with a challenge naming the
 * scope, plus `error="insufficient_scope"`, as distribution does, rather than the spec's 403 DENIED:
 * clients (docker, containers/image, containerd) answer a 401 by fetching a token for the challenged scope,
 * which is how a client holding a pull token goes on to push, whereas a 403 ends the operation.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { RegistryError } from '../../errors.js';
import { scopeOf, type Access, type Authorizer, type Identity } from '../authorizer.js';
import type { JwsAlgorithm } from '../../jws/index.js';
import { verifyJwt, type ResourceActions, type TokenClaims, type TrustedKeys } from './jwt.js';

/** The part of a pino logger the authorizer uses: why a token was refused (never the token itself). */
export interface TokenAuthorizerLogger {
  debug(obj: object, msg: string): void;
}

/** Options of {@link TokenAuthorizer}. */
export interface TokenAuthorizerOptions {
  /** Where clients get tokens (`auth.token.realm`), named in every challenge. */
  readonly realm: string;
  /** This registry's name (`auth.token.service`): the tokens' required audience. */
  readonly service: string;
  /** The required `iss` (`auth.token.issuer`). */
  readonly issuer: string;
  /** The signing key's public key, the `rootcertbundle` certificates and the `jwks` keys. */
  readonly keys: TrustedKeys;
  /** `auth.token.signingalgorithms`; default every algorithm of jwt.ts (never `none` or HS*). */
  readonly algorithms?: readonly JwsAlgorithm[];
  /** The clock, in ms (default `Date.now`). */
  readonly now?: () => number;
  readonly logger?: TokenAuthorizerLogger;
}

/** The error of a challenge: none (no token), a token that failed verification, or one too narrow. */
export type ChallengeError = 'invalid_token' | 'insufficient_scope';

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/** True when the token's access covers every action of `needed`; `*` in the token covers any action. */
function covers(granted: readonly ResourceActions[], needed: Access): boolean {
  const actions = new Set<string>();
  for (const g of granted) if (g.type === needed.type && g.name === needed.name) for (const a of g.actions) actions.add(a);
  return actions.has('*') || needed.actions.every((a) => actions.has(a));
}

/** Verifies Bearer tokens of the Docker token spec. */
export class TokenAuthorizer implements Authorizer {
  constructor(private readonly options: TokenAuthorizerOptions) {}

  async authorize(headers: IncomingHttpHeaders, access: Access[]): Promise<Identity> {
    const match = /^\s*bearer\s+(\S+)\s*$/i.exec(headers.authorization ?? '');
    const token = match?.[1];
    if (token === undefined) throw this.unauthorized('authentication required', access);
    let claims: TokenClaims;
    try {
      claims = verifyJwt(token, {
        keys: this.options.keys,
        issuer: this.options.issuer,
        audience: this.options.service,
        ...(this.options.algorithms ? { algorithms: this.options.algorithms } : {}),
        ...(this.options.now ? { now: this.options.now } : {}),
      });
    } catch (e) {
      this.options.logger?.debug({ reason: e instanceof Error ? e.message : String(e) }, 'bearer token refused');
      throw this.unauthorized('invalid token', access, 'invalid_token');
    }
    if (!access.every((a) => covers(claims.access, a))) throw this.unauthorized('insufficient scope', access, 'insufficient_scope');
    return claims.sub === '' ? {} : { user: claims.sub };
  }

  /**
   * The `WWW-Authenticate` value for a request needing `access`:
   * `Bearer realm="...",service="...",scope="repository:team/app:pull,push"` and, after a refused token,
   * `error="invalid_token"` or `error="insufficient_scope"`. Several resources are space-separated in one
   * `scope`, as distribution writes them; the base route (`access` empty) has no scope.
   */
  challenge(access: readonly Access[], error?: ChallengeError): string {
    let value = `Bearer realm=${quote(this.options.realm)},service=${quote(this.options.service)}`;
    if (access.length > 0) value += `,scope=${quote(access.map(scopeOf).join(' '))}`;
    if (error !== undefined) value += `,error=${quote(error)}`;
    return value;
  }

  private unauthorized(message: string, access: readonly Access[], error?: ChallengeError): RegistryError {
    return new RegistryError('UNAUTHORIZED', message, {
      headers: { 'WWW-Authenticate': this.challenge(access, error) },
      // The detail lists what was needed, as distribution's does, so a client can tell which scope is missing.
      ...(access.length > 0 ? { detail: access.flatMap((a) => a.actions.map((action) => ({ Type: a.type, Name: a.name, Action: action }))) } : {}),
    });
  }
}
