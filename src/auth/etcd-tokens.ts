// Calling etcd as a given user. etcd (run with --auth-token jwt) validates
// its JWTs statelessly: signature, exp, user, and a `revision` claim that
// must equal the current auth-store revision (shared/reference/stack.md §3).
// The gateway holds etcd's signing key and mints those tokens itself, so etcd
// enforces each caller's own role permissions and there is no second
// permission system to drift.
//
// Rules kept here: every token has a numeric `revision` (etcd 3.4.23 crashes
// on a token without it, etcd#14931) and a short `exp` (a token without one
// never expires); tokens are cached per (user, revision) and re-minted well
// before they expire; the revision is learned by authenticating the
// gateway's service user, whose etcd-issued token carries it.
import { createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { ScopeAuth } from '../etcd/connection.js';

const HASH: Record<string, string> = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };

export interface TokenMinterOptions {
  /** etcd's private key (PEM). */
  privateKeyPem: string | Buffer;
  /** etcd's sign-method, e.g. RS256. */
  signMethod: string;
  /** Lifetime of a minted token; etcd refuses it after `exp`. */
  ttlSeconds?: number;
  /** Authenticates the gateway's service user and returns etcd's token for it. */
  authenticate: () => Promise<string>;
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/** The `revision` claim of a JWT issued by etcd. */
export function revisionOf(etcdToken: string): number {
  const payload = etcdToken.split('.')[1];
  const revision = payload ? (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { revision?: unknown }).revision : undefined;
  if (typeof revision !== 'number') {
    throw new Error('etcd did not issue a JWT with a revision claim: run etcd with --auth-token jwt,... (simple tokens cannot be minted)');
  }
  return revision;
}

/**
 * Mints etcd tokens. Emits 'revision' (newRevision) when it learns that the
 * auth store changed (users, roles or permissions), so that open streams can
 * re-check what their callers may still see.
 */
export class EtcdTokenMinter extends EventEmitter {
  private readonly key: KeyObject;
  private readonly alg: string;
  private readonly hash: string;
  private readonly ttl: number;
  private revision = 0;
  private readonly cache = new Map<string, { token: string; revision: number; renewAt: number }>();
  private refreshing: Promise<void> | undefined;

  constructor(private readonly opts: TokenMinterOptions) {
    super();
    this.key = createPrivateKey(opts.privateKeyPem);
    this.alg = opts.signMethod;
    this.hash = HASH[this.alg.slice(2)] ?? 'sha256';
    this.ttl = opts.ttlSeconds ?? 300;
  }

  static fromFile(file: string, opts: Omit<TokenMinterOptions, 'privateKeyPem'>): EtcdTokenMinter {
    return new EtcdTokenMinter({ ...opts, privateKeyPem: readFileSync(file) });
  }

  get currentRevision(): number {
    return this.revision;
  }

  private mint(username: string): string {
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ alg: this.alg, typ: 'JWT' }));
    const payload = b64url(JSON.stringify({ username, revision: this.revision, exp: now + this.ttl }));
    const input = `${header}.${payload}`;
    const signature = sign(this.hash, Buffer.from(input), {
      key: this.key,
      // JWS wants raw (r||s) ECDSA signatures and PSS for PS*.
      ...(this.alg.startsWith('ES') ? { dsaEncoding: 'ieee-p1363' as const } : {}),
      ...(this.alg.startsWith('PS') ? { padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 } : {}),
    });
    return `${input}.${b64url(signature)}`;
  }

  /** A current token for `username`, from the cache while it is fresh. */
  tokenFor(username: string): string {
    const now = Date.now();
    const cached = this.cache.get(username);
    if (cached && cached.revision === this.revision && cached.renewAt > now) return cached.token;
    const token = this.mint(username);
    if (this.cache.size > 10_000) this.cache.clear();
    // Renew at half-life, so a token handed out always has minutes left.
    this.cache.set(username, { token, revision: this.revision, renewAt: now + (this.ttl * 1000) / 2 });
    return token;
  }

  /** Learns the current auth revision (one refresh at a time). */
  refresh(): Promise<void> {
    this.refreshing ??= this.opts
      .authenticate()
      .then((etcdToken) => {
        const revision = revisionOf(etcdToken);
        if (revision !== this.revision) {
          const previous = this.revision;
          this.revision = revision;
          if (previous !== 0) this.emit('revision', revision);
        }
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  /** The ScopeAuth that calls etcd as `username`. */
  scopeFor(username: string): ScopeAuth {
    return { token: () => this.tokenFor(username), refresh: () => this.refresh() };
  }
}

/**
 * The gateway's own identity when it cannot mint (etcd with simple tokens, or
 * no signing key configured): etcd's own token from Authenticate, renewed
 * when etcd refuses it.
 */
export function passwordScope(authenticate: () => Promise<string>): ScopeAuth {
  let token = '';
  let refreshing: Promise<void> | undefined;
  return {
    token: () => token,
    refresh: () =>
      (refreshing ??= authenticate()
        .then((t) => {
          token = t;
        })
        .finally(() => {
          refreshing = undefined;
        })),
  };
}
