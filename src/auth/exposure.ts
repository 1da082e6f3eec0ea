// Exposure policy: with authentication off, the gateway grants every caller
// everything its etcd connection may do, so it only listens on loopback
// unless the operator says explicitly that a wider audience is intended.
import { isIP } from 'node:net';

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}

export function assertSafeExposure(opts: { host: string; authEnabled: boolean; allowInsecurePublic: boolean }): void {
  if (opts.authEnabled || opts.allowInsecurePublic || isLoopbackHost(opts.host)) return;
  throw new Error(
    `HOST=${opts.host} is not a loopback address and authentication is off: anyone who can reach it could read and write all of etcd. ` +
      'Configure authentication, listen on 127.0.0.1, or set ALLOW_INSECURE_PUBLIC=1 if the network is trusted.',
  );
}
