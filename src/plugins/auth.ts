// Authentication: callers present a JWT (Authorization: Bearer, a websocket
// subprotocol, or a single-use SSE ticket); @fastify/jwt verifies it with the
// algorithm pinned to the configured key, issuer, audience, exp and nbf; the
// configured claim names the etcd user; req.etcd then calls etcd as that user
// with a token the gateway mints (src/auth/etcd-tokens.ts), so etcd's own
// role permissions decide every operation.
//
// The hook is added by the protected scope in src/app.ts (auth by
// encapsulation, never by comparing URLs). With authentication off the hook
// is not installed and req.etcd is the gateway's own identity.
import fastifyJwt from '@fastify/jwt';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { EtcdTokenMinter } from '../auth/etcd-tokens.js';
import { refuseExpiredStream } from '../auth/expiry.js';
import { refuseReservedWrites } from '../auth/lease-owners.js';
import { RoleUsers } from '../auth/role-users.js';
import { EtcdScope } from '../etcd/connection.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { isGrpcError, Problem, toProblem } from '../errors.js';

export interface AuthPluginOptions {
  /** Claim listing etcd roles (off when unset). */
  rolesClaim?: string;
  secret?: string;
  publicKeyFile?: string;
  /** An identity provider's JSON Web Key Set: callers' tokens are verified with its keys. */
  jwksUrl?: string;
  privateKeyFile?: string;
  issuer: string;
  audience: string;
  usernameClaim: string;
  tokenTtlSeconds: number;
  /** Required `typ` header of callers' tokens (and the one the gateway's own carry), when set. */
  typ?: string;
  allowRoot: boolean;
  /** The gateway's own etcd user (ETCD_USERNAME): refused as a caller, as root is. */
  serviceUser?: string;
  minter?: EtcdTokenMinter;
}

export interface Caller {
  username: string;
  /** Expiry of the caller's token (epoch seconds): streams end then. */
  exp: number;
}

/** The websocket subprotocol that carries the token: `bearer.<jwt>`, offered beside WS_PROTOCOL. */
export const WS_PROTOCOL = 'etcd-gateway.v1';
export const WS_BEARER_PREFIX = 'bearer.';
/**
 * etcd's websocket proxy (/v3 streams): `Sec-WebSocket-Protocol: Bearer, <token>`,
 * answered with `Bearer`. (Its other way, a `token` cookie, is not taken:
 * cookies ride along on websockets other sites open.)
 */
export const WS_ETCD_BEARER = 'Bearer';
export const TICKET_TTL_SECONDS = 30;

declare module 'fastify' {
  interface FastifyInstance {
    /** Whether callers must authenticate. */
    authEnabled: boolean;
    /** The onRequest hook of the protected scope. */
    authenticate: (req: FastifyRequest) => Promise<void>;
    /** Signs a gateway token for an etcd user (POST /v1/auth/token), when a signing key is configured. */
    issueToken?: (username: string) => { token: string; expiresIn: number };
    /** Issues a single-use SSE ticket for the caller. */
    issueTicket?: (caller: Caller) => { ticket: string; expiresIn: number };
    /** Whether tokens for this etcd user are refused: root and the gateway's own user, unless AUTH_ALLOW_ROOT. */
    isReservedUser: (username: string) => boolean;
    minter?: EtcdTokenMinter;
  }
  interface FastifyRequest {
    caller?: Caller;
  }
}

/**
 * Refusing to start: gateway authentication is on, but etcd would not enforce
 * the permissions of the users the gateway's tokens name. src/server.ts
 * prints the message as one line and exits 2.
 */
export class FailClosedError extends Error {
  override name = 'FailClosedError';
}

/** How long start-up waits for etcd to answer before it gives up confirming etcd's authentication. */
const ETCD_AUTH_WAIT_MS = 30_000;

/**
 * Fail closed: with etcd's authentication off, the tokens the gateway mints
 * are ignored and every token holder could do everything. etcd's auth is on
 * (with JWT tokens, which the gateway needs to call etcd as each caller)
 * exactly when the service user's Authenticate returns a token with a
 * `revision` claim; that first answer also gives the minter its revision.
 */
async function confirmEtcdAuth(minter: EtcdTokenMinter): Promise<void> {
  const deadline = Date.now() + ETCD_AUTH_WAIT_MS;
  for (;;) {
    try {
      return await minter.refresh();
    } catch (err) {
      // etcd not answering yet (started together with the gateway) is waited for.
      const unreachable = isGrpcError(err) && toProblem(err).status >= 500;
      if (unreachable && Date.now() < deadline) {
        await sleep(1000);
        continue;
      }
      const why = !isGrpcError(err)
        ? "etcd's Authenticate did not return a JWT with a revision claim (run etcd with --auth-token jwt,...)"
        : /authentication is not enabled/.test(err.details ?? err.message)
          ? "etcd's authentication is off (etcdctl auth enable)"
          : unreachable
            ? 'etcd did not answer to confirm that its authentication is on'
            : `the gateway's etcd user (ETCD_USERNAME) cannot authenticate: ${toProblem(err).message}`;
      throw new FailClosedError(`refusing to start: gateway authentication is on, but ${why}; etcd would let every token holder do everything`);
    }
  }
}

function refusedIdentity(): Problem {
  return new Problem(403, 'root_not_allowed', "tokens for etcd's root user and for the gateway's own user (ETCD_USERNAME) are refused (AUTH_ALLOW_ROOT)");
}

function unauthorized(detail: string, code = 'unauthenticated'): Problem {
  return new Problem(401, code, detail, { headers: { 'www-authenticate': `Bearer realm="etcd-gateway", error="invalid_token"` } });
}

/** The algorithm a public key implies: the only one accepted (no HS/RS confusion, no `none`). */
function algorithmOf(pem: string): string {
  const key = createPublicKey(pem);
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ES256';
    if (curve === 'secp384r1') return 'ES384';
    if (curve === 'secp521r1') return 'ES512';
  }
  throw new Error(`AUTH_JWT_PUBLIC_KEY_FILE: unsupported key type ${key.asymmetricKeyType}`);
}

/** What a JWKS may sign with: asymmetric algorithms only (never HS*, never none). */
const JWKS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

/**
 * Verification with an identity provider's keys (jose): the key is the one
 * the token's `kid` names in the JWKS, which is fetched again when an unknown
 * `kid` appears (key rotation) but at most every 30 s, so tokens with made-up
 * key ids cannot make the gateway hammer the provider. A provider that does
 * not answer is the gateway's problem (503), not the caller's (401).
 */
function jwksVerifier(url: string, opts: AuthPluginOptions): (token: string) => Promise<Record<string, unknown>> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`AUTH_JWKS_URL: not a URL (${url})`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new Error('AUTH_JWKS_URL: must be an http(s) URL');
  const keys = createRemoteJWKSet(parsed, { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
  return async (token) => {
    try {
      const { payload } = await jwtVerify(token, keys, {
        algorithms: JWKS_ALGORITHMS,
        issuer: opts.issuer,
        audience: opts.audience,
        requiredClaims: ['exp'],
        clockTolerance: 30,
      });
      return payload as Record<string, unknown>;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_JWKS_TIMEOUT' || code === 'ERR_JOSE_GENERIC' || err instanceof TypeError) {
        throw new Problem(503, 'jwks_unavailable', 'the identity provider\'s keys (AUTH_JWKS_URL) cannot be fetched', { headers: { 'retry-after': '5' } });
      }
      throw err;
    }
  };
}

/** `typ` compared as RFC 8725 says: case-insensitive, `application/` optional. */
function normalizeTyp(typ: unknown): string | undefined {
  return typeof typ === 'string' ? typ.toLowerCase().replace(/^application\//, '') : undefined;
}

/**
 * The gateway's rules for a verified token, whichever key verified it (the
 * gateway's own or the identity provider's): `iss` and `aud` must be present
 * and match (the libraries skip a claim that is absent), and the `typ`
 * header must match AUTH_JWT_TYP when it is set.
 */
function checkClaims(token: string, claims: Record<string, unknown>, opts: AuthPluginOptions): void {
  if (claims.iss !== opts.issuer) throw unauthorized(`the token's iss claim must be ${JSON.stringify(opts.issuer)}`, 'invalid_token');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(opts.audience)) throw unauthorized(`the token's aud claim must include ${JSON.stringify(opts.audience)}`, 'invalid_token');
  if (opts.typ !== undefined && normalizeTyp(decodeProtectedHeader(token).typ) !== normalizeTyp(opts.typ)) {
    throw unauthorized(`the token's typ header must be ${JSON.stringify(opts.typ)}`, 'invalid_token');
  }
}

/** The `alg` a token's header names (undefined for garbage). */
function algorithmOfToken(token: string): string | undefined {
  try {
    return decodeProtectedHeader(token).alg;
  } catch {
    return undefined;
  }
}

function tokenFrom(req: FastifyRequest): { token: string; ticket: boolean } | undefined {
  const header = req.headers.authorization;
  if (header) {
    // "Bearer <token>", or the bare "<token>" etcd's own clients send.
    const m = /^(?:Bearer\s+)?(\S+)\s*$/i.exec(header);
    if (!m) throw unauthorized('Authorization must be "Bearer <token>" (or the token alone, as etcd clients send it)');
    return { token: m[1]!, ticket: false };
  }
  const protocols = req.headers['sec-websocket-protocol'];
  if (protocols) {
    const bearer = protocols
      .split(',')
      .map((p) => p.trim())
      .find((p) => p.startsWith(WS_BEARER_PREFIX));
    if (bearer) return { token: bearer.slice(WS_BEARER_PREFIX.length), ticket: false };
    const list = protocols.split(',').map((p) => p.trim());
    const at = list.indexOf(WS_ETCD_BEARER);
    if (at >= 0 && list[at + 1]) return { token: list[at + 1]!, ticket: false };
  }
  const ticket = (req.query as Record<string, unknown> | undefined)?.ticket;
  if (typeof ticket === 'string' && ticket) return { token: ticket, ticket: true };
  return undefined;
}

export default fp<AuthPluginOptions>(
  async (app, opts) => {
    const enabled = Boolean(opts.secret || opts.publicKeyFile || opts.jwksUrl);
    app.decorate('authEnabled', enabled);
    app.decorateRequest('caller', undefined);
    // The signing key (or the identity provider) could name root or the
    // gateway's own user, both with every permission: callers get them only
    // when allowed explicitly.
    app.decorate('isReservedUser', (username: string) => !opts.allowRoot && (username === 'root' || (opts.serviceUser !== undefined && username === opts.serviceUser)));
    if (opts.minter) {
      app.decorate('minter', opts.minter);
      // Notice changes to users and roles within seconds even when no caller
      // hits a stale token: a cheap read as the service user fails as "old"
      // after any change, which refreshes the revision and emits 'revision'.
      const poll = setInterval(() => {
        app.etcd.kv.range({ key: Buffer.from([0]), count_only: true, limit: 1, serializable: true }).catch(() => undefined);
      }, 2000);
      poll.unref();
      app.addHook('onClose', async () => clearInterval(poll));
      opts.minter.refresh().catch((err) => app.log.warn({ err: (err as Error).message }, 'cannot learn etcd auth revision yet'));
    }
    if (!enabled) {
      app.decorate('authenticate', async () => undefined);
      return;
    }
    if (!opts.minter) {
      throw new Error('authentication needs ETCD_TOKEN_SIGNING_KEY_FILE (etcd run with --auth-token jwt) and ETCD_USERNAME/ETCD_PASSWORD');
    }
    const minter = opts.minter;
    await confirmEtcdAuth(minter);
    const roleUsers = opts.rolesClaim ? new RoleUsers(app.etcd) : undefined;
    const publicPem = opts.publicKeyFile ? readFileSync(opts.publicKeyFile, 'utf8') : undefined;
    const privatePem = opts.privateKeyFile ? readFileSync(opts.privateKeyFile, 'utf8') : undefined;
    const algorithm = publicPem ? algorithmOf(publicPem) : 'HS256';
    const canSign = Boolean(opts.secret || privatePem);
    if (opts.jwksUrl && publicPem) throw new Error('AUTH_JWKS_URL and AUTH_JWT_PUBLIC_KEY_FILE: set one of them');
    const verifyRemote = opts.jwksUrl ? jwksVerifier(opts.jwksUrl, opts) : undefined;
    // The gateway's own key (a secret or a key pair) verifies its own tokens
    // and tickets; without one (AUTH_JWKS_URL alone) it issues none.
    if (opts.secret || publicPem) await app.register(fastifyJwt, {
      secret: opts.secret ?? ({ public: publicPem!, ...(privatePem ? { private: privatePem } : {}) } as { public: string; private: string }),
      // @fastify/jwt takes expiresIn in seconds (as jsonwebtoken did), clockTolerance in milliseconds.
      sign: { algorithm: algorithm as 'HS256', iss: opts.issuer, aud: opts.audience, expiresIn: opts.tokenTtlSeconds, ...(opts.typ ? { typ: opts.typ } : {}) },
      verify: {
        algorithms: [algorithm as 'HS256'],
        allowedIss: opts.issuer,
        allowedAud: opts.audience,
        requiredClaims: ['exp'],
        clockTolerance: 30_000,
      },
    });

    // Single-use: a ticket's id is remembered until it expires. The set is
    // per process; with several replicas a ticket could be replayed once per
    // replica within its 30 seconds, which the short lifetime bounds.
    const usedTickets = new Map<string, number>();
    const sweep = setInterval(() => {
      const now = Date.now() / 1000;
      for (const [id, exp] of usedTickets) if (exp < now) usedTickets.delete(id);
    }, 10_000);
    sweep.unref();
    app.addHook('onClose', async () => clearInterval(sweep));

    if (canSign) {
      app.decorate('issueToken', (username: string) => {
        if (app.isReservedUser(username)) throw refusedIdentity();
        return {
          token: app.jwt.sign({ [opts.usernameClaim]: username, ...(opts.usernameClaim === 'sub' ? {} : { sub: username }) }),
          expiresIn: opts.tokenTtlSeconds,
        };
      });
      app.decorate('issueTicket', (caller: Caller) => {
        const exp = Math.min(Math.floor(Date.now() / 1000) + TICKET_TTL_SECONDS, caller.exp);
        const jti = crypto.randomUUID();
        return {
          ticket: app.jwt.sign({ [opts.usernameClaim]: caller.username, typ: 'ticket', jti, ctx_exp: caller.exp }, { expiresIn: Math.max(1, exp - Math.floor(Date.now() / 1000)) }),
          expiresIn: exp - Math.floor(Date.now() / 1000),
        };
      });
    }

    app.decorate('authenticate', async (req: FastifyRequest) => {
      const found = tokenFrom(req);
      if (!found) throw unauthorized('this route needs a bearer token (Authorization: Bearer <token>)', 'missing_token');
      let claims: Record<string, unknown>;
      try {
        // With a JWKS, tokens the gateway signed itself (HS256 with
        // AUTH_JWT_SECRET: its own tokens and tickets) are still its own.
        claims = verifyRemote && !(opts.secret && algorithmOfToken(found.token) === 'HS256') ? await verifyRemote(found.token) : app.jwt.verify(found.token);
      } catch (err) {
        if (err instanceof Problem) throw err;
        throw unauthorized(`invalid token: ${(err as Error).message}`, 'invalid_token');
      }
      checkClaims(found.token, claims, opts);
      const isTicket = claims.typ === 'ticket';
      if (isTicket !== found.ticket) {
        throw unauthorized(isTicket ? 'a ticket is only good for one event stream (?ticket=)' : '?ticket= takes a ticket from POST /v1/auth/ticket', 'invalid_token');
      }
      if (isTicket) {
        const jti = String(claims.jti);
        if (usedTickets.has(jti)) throw unauthorized('this ticket was used already', 'ticket_used');
        usedTickets.set(jti, Number(claims.exp));
      }
      const roles = opts.rolesClaim ? claims[opts.rolesClaim] : undefined;
      let username = claims[opts.usernameClaim];
      // Also when a roles claim decides the user: the token still names root or the gateway.
      if (typeof username === 'string' && app.isReservedUser(username)) throw refusedIdentity();
      if (roles !== undefined) {
        if (!Array.isArray(roles) || !roles.every((r) => typeof r === 'string' && r !== '')) {
          throw unauthorized(`the ${opts.rolesClaim} claim must list etcd role names`, 'invalid_token');
        }
        username = await roleUsers!.userFor(roles as string[]);
      }
      if (typeof username !== 'string' || username === '') {
        throw unauthorized(`the token has no ${opts.usernameClaim} claim naming an etcd user`, 'invalid_token');
      }
      if (app.isReservedUser(username)) throw refusedIdentity();
      const exp = Number(isTicket ? claims.ctx_exp : claims.exp);
      req.caller = { username, exp };
      // A websocket is a stream: no clock-skew leeway past `exp` for opening it
      // (HTTP streams are refused where they open, before they answer 200).
      if (req.ws) refuseExpiredStream(req.caller);
      req.etcd = new EtcdScope(app.etcdConnection, minter.scopeFor(username), refuseReservedWrites);
    });
  },
  { name: 'auth', fastify: '5.x', dependencies: ['etcd'] },
);
