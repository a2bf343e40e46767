/**
 * Cascade's embedded token server: the endpoint `auth.token.realm` points at, served by the registry
 * process itself, so that one `cascade registry` is a complete token-auth origin for tests of the server
 * role and of mirror mode.
 *
 * - `GET <realm path>?service=&scope=&scope=...` with optional Basic credentials (what docker, skopeo and
 *   containerd send), and `POST` with a form body `grant_type=password&username=&password=&scope=` (the
 *   OAuth2 flow `docker login` tries first).
 * - Credentials are checked against `auth.token.htpasswd`; no credentials is the anonymous account. Wrong
 *   credentials are a 401, never a silent downgrade to anonymous, so a typo in a password is noticed.
 * - The token grants the requested scopes intersected with the `auth.token.access` rules (see rules.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import { RegistryError } from '../../errors.js';
import type { ExtraRoute } from '../../http/app.js';
import { readBody } from '../../http/body.js';
import type { HtpasswdAuthenticator } from '../htpasswd.js';
import type { JwsSigner, ResourceActions } from './jwt.js';
import { parseScopes, ScopeError, type AccessRules } from './rules.js';

/** What the endpoint answers, as the Docker token spec and its OAuth2 variant describe. */
export interface TokenResponse {
  readonly token: string;
  /** The same token, under the OAuth2 name. */
  readonly access_token: string;
  /** Lifetime in seconds. */
  readonly expires_in: number;
  /** RFC 3339 time of issue. */
  readonly issued_at: string;
}

/** The part of a pino logger the token server uses; it is never given credentials or tokens. */
export interface TokenServerLogger {
  debug(obj: object, msg: string): void;
}

/** Options of {@link TokenServer}. */
export interface TokenServerOptions {
  readonly signer: JwsSigner;
  /** `iss` of the tokens (`auth.token.issuer`). */
  readonly issuer: string;
  /** `aud` of the tokens (`auth.token.service`); a request naming another service is refused. */
  readonly service: string;
  /** Token lifetime in ms (`auth.token.expiration`). */
  readonly expirationMs: number;
  readonly rules: AccessRules;
  /** The users (`auth.token.htpasswd`); without it every request with credentials is refused. */
  readonly authenticator?: HtpasswdAuthenticator;
  /** The clock, in ms (default `Date.now`). */
  readonly now?: () => number;
  readonly logger?: TokenServerLogger;
}

/** Largest POST form accepted: a few scopes and credentials. */
const MAX_FORM_BYTES = 64 * 1024;

/** Who asks: a user, or undefined for an anonymous request. */
type Requester = { readonly account: string | undefined };

/**
 * Issues registry tokens. {@link TokenServer.handle} is the HTTP endpoint (a Koa handler for GET and POST);
 * {@link TokenServer.issue} signs a token for a known account, for callers that authenticated it already.
 *
 * @example
 * const server = new TokenServer({ signer, issuer: 'cascade', service: 'registry', expirationMs: 300_000, rules });
 * createRegistryApp({ ..., extraRoutes: server.routes('/auth/token') });
 */
export class TokenServer {
  private readonly now: () => number;

  constructor(private readonly options: TokenServerOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The GET and POST routes of the endpoint at `path`, for `createRegistryApp`'s `extraRoutes`. */
  routes(path: string): ExtraRoute[] {
    const handler = (ctx: Context) => this.handle(ctx);
    return [
      { method: 'GET', path, handler },
      { method: 'POST', path, handler },
    ];
  }

  /**
   * Signs a token for `account` (undefined: anonymous) granting `requested` as far as the rules allow.
   * Also returns what was granted.
   */
  issue(account: string | undefined, requested: readonly ResourceActions[]): { response: TokenResponse; granted: ResourceActions[] } {
    const granted = this.options.rules.grant(account, requested);
    const nowMs = this.now();
    const iat = Math.floor(nowMs / 1000);
    const lifetime = Math.max(1, Math.floor(this.options.expirationMs / 1000));
    const token = this.options.signer.sign({
      iss: this.options.issuer,
      sub: account ?? '',
      aud: this.options.service,
      exp: iat + lifetime,
      nbf: iat,
      iat,
      jti: randomBytes(16).toString('base64url'),
      access: granted,
    });
    return {
      response: { token, access_token: token, expires_in: lifetime, issued_at: new Date(iat * 1000).toISOString() },
      granted,
    };
  }

  /** Serves one GET or POST request of the endpoint. Errors are thrown as RegistryError for the app's envelope. */
  async handle(ctx: Context): Promise<void> {
    let service: string | undefined;
    let scopes: string[];
    let requester: Requester;
    if (ctx.method === 'POST') {
      const form = await this.readForm(ctx);
      const grant = form.get('grant_type');
      if (grant !== 'password') {
        throw badRequest(`grant_type ${JSON.stringify(grant ?? '')} is not supported; use "password", or GET with Basic credentials`);
      }
      service = form.get('service') ?? undefined;
      scopes = form.getAll('scope');
      const username = form.get('username') ?? '';
      const password = form.get('password') ?? '';
      requester = await this.authenticate(`Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`);
    } else {
      service = single(ctx.query['service']);
      const scope = ctx.query['scope'];
      scopes = scope === undefined ? [] : Array.isArray(scope) ? scope : [scope];
      // `account` is only what the client says it is; the identity comes from the credentials alone.
      requester = await this.authenticate(ctx.get('authorization') || undefined);
    }
    if (service !== undefined && service !== this.options.service) {
      throw badRequest(`service ${JSON.stringify(service.slice(0, 200))} is not this registry's (${JSON.stringify(this.options.service)})`);
    }
    let requested: ResourceActions[];
    try {
      requested = scopes.flatMap(parseScopes);
    } catch (e) {
      if (e instanceof ScopeError) throw badRequest(e.message);
      throw e;
    }
    const { response, granted } = this.issue(requester.account, requested);
    ctx.state.user = requester.account;
    this.options.logger?.debug(
      { account: requester.account ?? '(anonymous)', granted: granted.map((g) => `${g.type}:${g.name}:${g.actions.join(',')}`) },
      'token issued',
    );
    // RFC 6749 section 5.1: a response carrying a token must not be cached.
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    ctx.status = 200;
    ctx.body = response;
  }

  /** Checks credentials: none is anonymous; present but wrong is a 401. */
  private async authenticate(authorization: string | undefined): Promise<Requester> {
    if (authorization === undefined) return { account: undefined };
    const who = this.options.authenticator === undefined ? undefined : await this.options.authenticator.authenticate(authorization);
    if (who === undefined) {
      throw new RegistryError('UNAUTHORIZED', 'invalid username or password', {
        headers: { 'WWW-Authenticate': `Basic realm="${this.options.service.replace(/["\\]/g, '\\$&')}"` },
      });
    }
    return { account: who.user };
  }

  private async readForm(ctx: Context): Promise<URLSearchParams> {
    const type = (ctx.get('content-type').split(';')[0] ?? '').trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') {
      ctx.req.resume();
      throw badRequest('expected a form body (application/x-www-form-urlencoded)');
    }
    return new URLSearchParams((await readBody(ctx.req, MAX_FORM_BYTES, 'token request')).toString('utf8'));
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A malformed token request: 400 `REQUEST_INVALID`. */
function badRequest(message: string): RegistryError {
  return new RegistryError('REQUEST_INVALID', message);
}
