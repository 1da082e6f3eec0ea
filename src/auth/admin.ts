// The admin scope. Every admin route of /v1 and /v3 (members, status and
// health, alarms, compaction, defragmentation, snapshots, hashes, leader
// transfer, check perf, the list of all leases, users, roles, auth on and
// off) is registered inside one scope guarded here, so no route can forget
// the check. etcd 3.4 leaves several of these calls open to every user
// (Alarm, MoveLeader, MemberList, Status, Compaction, LeaseLeases check no
// permission): the gateway, which promises they need root, must decide.
//
// Whether a caller holds root is learned from etcd, as the caller: etcd
// answers RoleList to holders of the root role alone. The verdict is cached
// per etcd user and auth revision; the minter learns of a change to users or
// roles within about two seconds (its poll), and a new revision starts a
// fresh cache, so a revoked root role stops passing within that time.
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { adminRequired, toProblem } from '../errors.js';
import { problemResponse } from '../schemas/common.js';

/** The line the admin scope adds to each of its routes' description in the spec. */
export const ADMIN_NOTE = "Requires etcd's root role (admin).";

/** etcd's refusals of a user who is not root (or is no user at all): a verdict, not a failure. */
const NOT_ROOT = new Set(['permission_denied', 'user_not_found']);

export class RootVerdicts {
  private revision = Number.NaN;
  private verdicts = new Map<string, Promise<boolean>>();

  constructor(private readonly currentRevision: () => number) {}

  /** Whether `username` holds etcd's root role; `ask` (a call only root may make) runs once per user and auth revision. */
  holdsRoot(username: string, ask: () => Promise<unknown>): Promise<boolean> {
    const revision = this.currentRevision();
    if (revision !== this.revision || this.verdicts.size > 10_000) {
      this.revision = revision;
      this.verdicts = new Map();
    }
    const verdicts = this.verdicts;
    let verdict = verdicts.get(username);
    if (!verdict) {
      verdict = ask().then(
        () => true,
        (err: unknown) => {
          if (NOT_ROOT.has(toProblem(err).code)) return false;
          throw err;
        },
      );
      verdicts.set(username, verdict);
      // etcd unreachable is no verdict: the next request asks again.
      verdict.catch(() => verdicts.delete(username));
    }
    return verdict;
  }
}

/** The admin scope's hook: after authentication, only holders of etcd's root role pass. */
export function requireRoot(app: FastifyInstance): (req: FastifyRequest) => Promise<void> {
  const verdicts = new RootVerdicts(() => app.minter?.currentRevision ?? 0);
  return async (req) => {
    const username = req.caller?.username;
    // Authentication runs first and names every caller; no name is no pass.
    if (username === undefined) throw adminRequired('(none)');
    if (!(await verdicts.holdsRoot(username, () => req.etcd.auth.roleList()))) throw adminRequired(username);
  };
}

/**
 * Marks a route of the admin scope in the spec: a line in its description,
 * `x-admin: true`, and 403 among its answers (problem+json on /v1; the /v3
 * routes, which have no response schemas, answer etcd's own error body).
 */
export function markAdmin(route: RouteOptions): void {
  const schema = (route.schema ?? {}) as Record<string, unknown>;
  const response = schema.response as Record<string, unknown> | undefined;
  route.schema = {
    ...schema,
    description: schema.description ? `${String(schema.description)}\n\n${ADMIN_NOTE}` : ADMIN_NOTE,
    'x-admin': true,
    response: response ? { 403: problemResponse(403), ...response } : v3Responses(),
  } as RouteOptions['schema'];
}

// The /v3 routes answer etcd's messages and error body; these schemas only
// describe them (any object passes through unchanged).
const v3Responses = () => ({
  200: { description: "etcd's response message", type: 'object', additionalProperties: true },
  403: {
    description: "Not permitted: etcd's PermissionDenied error body",
    type: 'object',
    properties: { error: { type: 'string' }, message: { type: 'string' }, code: { type: 'integer', description: '7 (gRPC PermissionDenied)' } },
  },
});

/** Makes `scope` the admin scope: the root check (with authentication on) and the spec's marks on every route registered in it. */
export function adminScope(scope: FastifyInstance): void {
  if (scope.authEnabled) scope.addHook('onRequest', requireRoot(scope));
  scope.addHook('onRoute', markAdmin);
}
