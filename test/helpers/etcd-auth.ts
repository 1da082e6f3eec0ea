// etcd authentication as the tests turn it on: etcd's root user, the
// gateway's own etcd user (with the root role), and callers holding one
// prefix each; and the gateway configuration that goes with it.
import type { Config } from '../../src/config.js';

type Etcdctl = (...args: string[]) => Promise<string>;

/** The gateway's own etcd user in every test cluster with authentication on. */
export const GATEWAY_USER = { name: 'gateway', password: 'gwpw' };

/**
 * Creates root (password `rootpw`), the gateway's user, and each caller with
 * a role of its own granting readwrite on its prefix; then `auth enable`.
 */
export async function enableEtcdAuth(etcdctl: Etcdctl, callers: { user: string; password: string; role: string; prefix: string }[]): Promise<void> {
  await etcdctl('user', 'add', 'root:rootpw');
  await etcdctl('user', 'add', `${GATEWAY_USER.name}:${GATEWAY_USER.password}`);
  await etcdctl('user', 'grant-role', GATEWAY_USER.name, 'root');
  for (const c of callers) {
    await etcdctl('role', 'add', c.role);
    await etcdctl('role', 'grant-permission', c.role, 'readwrite', c.prefix, '--prefix=true');
    await etcdctl('user', 'add', `${c.user}:${c.password}`);
    await etcdctl('user', 'grant-role', c.user, c.role);
  }
  await etcdctl('auth', 'enable');
}

/** The gateway's settings for a cluster with etcd authentication on: its etcd user and etcd's token key, plus `extra`. */
export function gatewayAuthConfig(cluster: { signingKeyFile: string }, extra: Partial<Config>): Partial<Config> {
  return { ETCD_TOKEN_SIGNING_KEY_FILE: cluster.signingKeyFile, ETCD_USERNAME: GATEWAY_USER.name, ETCD_PASSWORD: GATEWAY_USER.password, ...extra };
}
