// Primitives and shared components. Shared schemas carry an $id, are added to
// the app once (src/app.ts) and referenced with Type.Ref, so the OpenAPI spec
// gets named components.
import { Type, type Static } from 'typebox';

export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'urn:etcd-gateway:problem:<code>' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'Stable machine-readable error name.' }),
    grpc_status: Type.Optional(Type.String({ description: 'gRPC status of the etcd error, where etcd produced it.' })),
    outcome: Type.Optional(
      Type.Literal('unknown', { description: 'Present on writes that may or may not have been applied.' }),
    ),
  },
  {
    $id: 'Problem',
    title: 'Problem',
    description: 'RFC 9457 problem details (application/problem+json).',
    additionalProperties: true,
  },
);

export const ProblemRef = Type.Ref('Problem');

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Bad input',
  401: 'Not authenticated',
  403: 'Not permitted',
  404: 'Not found',
  409: 'Conflict',
  410: 'Revision compacted',
  412: 'Precondition failed',
  413: 'Body too large',
  500: 'Internal error',
  503: 'etcd unreachable or without leader (Retry-After)',
  504: 'etcd deadline; for writes `outcome: "unknown"`',
};

/** A problem+json response, as the error handler sends it. */
export function problemResponse(status: number) {
  return {
    description: ERROR_DESCRIPTIONS[status] ?? 'Error',
    content: { 'application/problem+json': { schema: ProblemRef } },
  };
}

/** Error responses: those every route may give plus the given ones. */
export function errorResponses(...statuses: number[]) {
  const out: Record<number, ReturnType<typeof problemResponse>> = {};
  for (const s of [400, 500, 503, 504, ...statuses].sort()) out[s] = problemResponse(s);
  return out;
}

/** etcd revisions and versions: JSON numbers (exact below 2^53). */
export const Revision = Type.Integer({ minimum: 1, description: 'An etcd store revision.' });

/** Lease IDs: lowercase hex as etcdctl prints them. */
export const LeaseId = Type.String({ pattern: '^[0-9a-f]{1,16}$', description: 'Lease ID in lowercase hex, as etcdctl prints it.' });

/**
 * A boolean query flag: present (`?prefix`, `?prefix=`), `true`/`1`, or
 * `false`/`0`. Ajv's coercion would turn the bare `?prefix` into false, so
 * flags are strings and read with isSet().
 */
export const Flag = Type.Enum(['', 'true', '1', 'false', '0'], {
  description: 'Boolean flag: present, `true` or `1` to set; `false` or `0` to unset.',
});
export type Flag = Static<typeof Flag>;

export function isSet(flag: Flag | undefined): boolean {
  return flag !== undefined && flag !== 'false' && flag !== '0';
}

export const HealthSchema = Type.Object({ status: Type.String() });
