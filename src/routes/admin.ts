// Users, roles and permissions over HTTP, mirroring `etcdctl user`, `etcdctl
// role` and `etcdctl auth`. Every call runs as the caller, in the admin scope
// (src/auth/admin.ts): nothing to check here.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { IPermission } from 'etcd3';
import { Type, type Static } from 'typebox';
import { badRequest } from '../errors.js';
import { bytesField, bytesJson, num, prefixEnd, ZERO_KEY } from '../kv/codec.js';
import { rangeOf } from '../kv/range.js';
import {
  PasswordBody,
  PermissionSchema,
  RevokePermissionQuery,
  RoleAddBody,
  RoleParams,
  UserAddBody,
  UserParams,
  UserRoleParams,
} from '../schemas/admin.js';
import { errorResponses, isSet } from '../schemas/common.js';

const PERM_TYPE = { read: 'Read', write: 'Write', readwrite: 'Readwrite' } as const;

/** A permission's key range, as etcdctl role grant-permission computes it. */
function permissionRange(p: { key?: string; key_base64?: string; prefix?: boolean; from_key?: boolean; range_end?: string; range_end_base64?: string }) {
  const key = bytesField(p, 'key', 'invalid_permission');
  if (key === undefined) throw badRequest('a permission needs key or key_base64', 'invalid_permission');
  const range = rangeOf(key, { prefix: p.prefix, fromKey: p.from_key, rangeEnd: bytesField(p, 'range_end', 'invalid_permission') });
  return range;
}

function permissionJson(p: IPermission): Static<typeof PermissionSchema> {
  const type = String(p.permType).toLowerCase() as 'read' | 'write' | 'readwrite';
  const out: Record<string, unknown> = { type, ...bytesJson(p.key, 'key') };
  const end = p.range_end;
  if (end && end.length > 0) {
    if (end.equals(ZERO_KEY)) out.from_key = true;
    else if (end.equals(prefixEnd(p.key))) out.prefix = true;
    else Object.assign(out, bytesJson(end, 'range_end'));
  }
  return out as Static<typeof PermissionSchema>;
}

const done = { 200: Type.Ref('AdminDone') };

const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const answer = (res: { header: { revision: string } }) => ({ revision: num(res.header.revision) });

  app.post('/v1/auth/enable', { schema: { tags: ['auth'], summary: 'Enable authentication in etcd (etcdctl auth enable)', response: { ...done, ...errorResponses(403, 409) } } }, async (req) =>
    answer(await req.etcd.auth.authEnable()),
  );
  app.post('/v1/auth/disable', { schema: { tags: ['auth'], summary: 'Disable authentication in etcd (etcdctl auth disable)', response: { ...done, ...errorResponses(403) } } }, async (req) =>
    answer(await req.etcd.auth.authDisable()),
  );

  app.get('/v1/auth/users', { schema: { tags: ['auth'], summary: 'List users (etcdctl user list)', response: { 200: Type.Ref('NameList'), ...errorResponses(403) } } }, async (req) => ({
    names: (await req.etcd.auth.userList()).users,
  }));
  app.post(
    '/v1/auth/users',
    { schema: { tags: ['auth'], summary: 'Add a user (etcdctl user add)', body: UserAddBody, response: { 201: Type.Ref('AdminDone'), ...errorResponses(403, 409) } } },
    async (req, reply) => {
      const { name, password, no_password } = req.body;
      if (!no_password && !password) throw badRequest('give a password, or no_password: true', 'invalid_user');
      const res = await req.etcd.auth.userAdd({ name, password: no_password ? '' : password, options: { no_password: Boolean(no_password) } });
      return reply.code(201).header('location', `/v1/auth/users/${encodeURIComponent(name)}`).send(answer(res));
    },
  );
  app.get(
    '/v1/auth/users/:name',
    { schema: { tags: ['auth'], summary: 'A user and its roles (etcdctl user get)', params: UserParams, response: { 200: Type.Ref('User'), ...errorResponses(403, 404) } } },
    async (req) => ({ name: req.params.name, roles: (await req.etcd.auth.userGet({ name: req.params.name })).roles }),
  );
  app.delete(
    '/v1/auth/users/:name',
    { schema: { tags: ['auth'], summary: 'Delete a user (etcdctl user delete)', params: UserParams, response: { ...done, ...errorResponses(403, 404) } } },
    async (req) => answer(await req.etcd.auth.userDelete({ name: req.params.name })),
  );
  app.put(
    '/v1/auth/users/:name/password',
    { schema: { tags: ['auth'], summary: 'Change a password (etcdctl user passwd)', params: UserParams, body: PasswordBody, response: { ...done, ...errorResponses(403, 404) } } },
    async (req) => answer(await req.etcd.auth.userChangePassword({ name: req.params.name, password: req.body.password })),
  );
  app.put(
    '/v1/auth/users/:name/roles/:role',
    { schema: { tags: ['auth'], summary: 'Grant a role to a user (etcdctl user grant-role)', params: UserRoleParams, response: { ...done, ...errorResponses(403, 404) } } },
    async (req) => answer(await req.etcd.auth.userGrantRole({ user: req.params.name, role: req.params.role })),
  );
  app.delete(
    '/v1/auth/users/:name/roles/:role',
    { schema: { tags: ['auth'], summary: 'Revoke a role from a user (etcdctl user revoke-role)', params: UserRoleParams, response: { ...done, ...errorResponses(403, 404) } } },
    async (req) => answer(await req.etcd.auth.userRevokeRole({ name: req.params.name, role: req.params.role })),
  );

  app.get('/v1/auth/roles', { schema: { tags: ['auth'], summary: 'List roles (etcdctl role list)', response: { 200: Type.Ref('NameList'), ...errorResponses(403) } } }, async (req) => ({
    names: (await req.etcd.auth.roleList()).roles,
  }));
  app.post(
    '/v1/auth/roles',
    { schema: { tags: ['auth'], summary: 'Add a role (etcdctl role add)', body: RoleAddBody, response: { 201: Type.Ref('AdminDone'), ...errorResponses(403, 409) } } },
    async (req, reply) => {
      const res = await req.etcd.auth.roleAdd({ name: req.body.name });
      return reply.code(201).header('location', `/v1/auth/roles/${encodeURIComponent(req.body.name)}`).send(answer(res));
    },
  );
  app.get(
    '/v1/auth/roles/:name',
    { schema: { tags: ['auth'], summary: 'A role and its permissions (etcdctl role get)', params: RoleParams, response: { 200: Type.Ref('Role'), ...errorResponses(403, 404) } } },
    async (req) => ({ name: req.params.name, permissions: (await req.etcd.auth.roleGet({ role: req.params.name })).perm.map(permissionJson) }),
  );
  app.delete(
    '/v1/auth/roles/:name',
    { schema: { tags: ['auth'], summary: 'Delete a role (etcdctl role delete)', params: RoleParams, response: { ...done, ...errorResponses(403, 404) } } },
    async (req) => answer(await req.etcd.auth.roleDelete({ role: req.params.name })),
  );
  app.post(
    '/v1/auth/roles/:name/permissions',
    {
      schema: {
        tags: ['auth'],
        summary: 'Grant a permission to a role (etcdctl role grant-permission)',
        description: 'On a key, a prefix (`prefix: true`), a range (`range_end`) or every key from one on (`from_key: true`).',
        params: RoleParams,
        body: Type.Ref('Permission'),
        response: { ...done, ...errorResponses(403, 404) },
      },
    },
    async (req) => {
      const p = req.body as Static<typeof PermissionSchema>;
      const range = permissionRange(p);
      return answer(await req.etcd.auth.roleGrantPermission({ name: req.params.name, perm: { permType: PERM_TYPE[p.type], key: range.key, range_end: range.rangeEnd } }));
    },
  );
  app.delete(
    '/v1/auth/roles/:name/permissions',
    {
      schema: {
        tags: ['auth'],
        summary: 'Revoke a permission from a role (etcdctl role revoke-permission)',
        params: RoleParams,
        querystring: RevokePermissionQuery,
        response: { ...done, ...errorResponses(403, 404) },
      },
    },
    async (req) => {
      const q = req.query;
      const range = permissionRange({ key: q.key, prefix: isSet(q.prefix), from_key: isSet(q.from_key), range_end: q.range_end });
      return answer(await req.etcd.auth.roleRevokePermission({ role: req.params.name, key: range.key, range_end: range.rangeEnd }));
    },
  );
};

export default adminRoutes;
