// Mapping a roles claim onto etcd's RBAC: a caller whose token lists etcd
// role names (AUTH_ROLES_CLAIM) acts as a gateway-managed etcd user that holds
// exactly those roles, created on first use. etcd still enforces every
// permission; the gateway only decides which etcd user a role set is.
import { createHash } from 'node:crypto';
import type { EtcdScope } from '../etcd/connection.js';
import { Problem, toProblem } from '../errors.js';

/** Prefix of the users the gateway manages; one per distinct role set. */
export const ROLE_USER_PREFIX = 'gw-roles-';

export function roleSetUser(roles: string[]): string {
  const canonical = [...new Set(roles)].sort().join('\n');
  return ROLE_USER_PREFIX + createHash('sha256').update(canonical).digest('hex').slice(0, 24);
}

export class RoleUsers {
  /** Role sets known to exist as users in etcd (per process; etcd is the truth). */
  private readonly ready = new Map<string, Promise<void>>();

  constructor(private readonly service: EtcdScope) {}

  /** The etcd user for `roles`, creating it with exactly those roles if needed. */
  async userFor(roles: string[]): Promise<string> {
    if (roles.length === 0) throw new Problem(403, 'no_roles', 'the token lists no etcd roles');
    if (roles.includes('root')) throw new Problem(403, 'root_not_allowed', 'a roles claim cannot grant root');
    const name = roleSetUser(roles);
    let pending = this.ready.get(name);
    if (!pending) {
      pending = this.ensure(name, [...new Set(roles)]);
      this.ready.set(name, pending);
      pending.catch(() => this.ready.delete(name));
    }
    await pending;
    return name;
  }

  private async ensure(name: string, roles: string[]): Promise<void> {
    try {
      await this.service.auth.userAdd({ name, password: '', options: { no_password: true } });
    } catch (err) {
      if (toProblem(err).code !== 'user_exists') throw err;
    }
    const have = new Set((await this.service.auth.userGet({ name })).roles);
    for (const role of roles) {
      if (have.has(role)) continue;
      try {
        await this.service.auth.userGrantRole({ user: name, role });
      } catch (err) {
        if (toProblem(err).code === 'role_not_found') throw new Problem(403, 'unknown_role', `the token names role ${role}, which etcd does not have`);
        throw err;
      }
    }
  }
}
