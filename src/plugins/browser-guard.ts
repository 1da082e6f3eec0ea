// Defences against web pages, which matter most with authentication off (the
// default), when the browser itself is the only credential a page needs:
// - DNS rebinding: a page on evil.example whose name is re-pointed at the
//   gateway's address is "same origin" to the browser; its requests carry
//   `Host: evil.example`, so only hosts the gateway answers for are served.
// - Cross-site writes: a page may POST `text/plain` (and open websockets)
//   anywhere without a CORS preflight; unsafe methods and websocket upgrades
//   must come from the gateway's own origin or one listed in CORS_ORIGINS.
// One app-wide hook, so no route can forget either check. Clients that are
// not browsers send no Origin and pass the second check.
import { isIP } from 'node:net';
import fp from 'fastify-plugin';
import { checkOrigin } from '../auth/origin.js';
import { Problem } from '../errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Answers whatever Host the request names: health probes (kubelet names the pod IP, load balancers their own). */
    anyHost?: boolean;
  }
}

export interface BrowserGuardOptions {
  /** ALLOWED_HOSTS as configured; unset: the loopback names, the listen address and any IP address. */
  allowedHosts: string | undefined;
  /** The listen address (HOST). */
  listenHost: string;
  corsOrigins: string[];
}

const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
// A listen address that names no host a client could ask for.
const WILDCARDS = new Set(['0.0.0.0', '[::]']);

interface HostPort {
  host: string;
  port?: string;
}

/** `name`, `name:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, lower-cased, brackets kept. */
export function parseHost(value: string): HostPort {
  const v = value.trim().toLowerCase().replace(/\.$/, '');
  if (isIP(v) === 6) return { host: `[${v}]` };
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(v);
  if (!m) return { host: v };
  const host = m[1]!.replace(/\.$/, '');
  return m[2] === undefined ? { host } : { host, port: m[2] };
}

/** Decides whether a Host header names this gateway. */
export function hostMatcher(allowedHosts: string | undefined, listenHost: string): (hostHeader: string) => boolean {
  const configured = allowedHosts?.split(',').map((h) => h.trim()).filter(Boolean);
  if (configured?.includes('*')) return () => true;
  const allowed = (configured ?? [...LOOPBACK_NAMES, listenHost]).map(parseHost).filter((h) => !WILDCARDS.has(h.host));
  // A rebinding page always names a host name (its own), never an address:
  // by default any IP address may be named, so clients that reach the
  // gateway by address (a container's port, a pod IP) need no configuration.
  const anyAddress = configured === undefined;
  const decide = (hostHeader: string) => {
    const { host, port } = parseHost(hostHeader);
    if (anyAddress && isIP(host.replace(/^\[(.*)\]$/, '$1')) !== 0) return true;
    return allowed.some((a) => a.host === host && (a.port === undefined || a.port === port));
  };
  // Every request asks, and clients name few hosts: parse each once. Bounded,
  // since a client can send any Host.
  const decided = new Map<string, boolean>();
  return (hostHeader) => {
    let ok = decided.get(hostHeader);
    if (ok === undefined) {
      ok = decide(hostHeader);
      if (decided.size >= 256) decided.clear();
      decided.set(hostHeader, ok);
    }
    return ok;
  };
}

export default fp<BrowserGuardOptions>(
  async (app, opts) => {
    const hostAllowed = hostMatcher(opts.allowedHosts, opts.listenHost);
    app.addHook('onRequest', async (req) => {
      // HTTP/1.0 clients may omit Host; browsers never do.
      const host = req.headers.host;
      if (host !== undefined && !req.routeOptions.config.anyHost && !hostAllowed(host)) {
        throw new Problem(421, 'host_not_allowed', `this gateway does not answer for host ${host} (ALLOWED_HOSTS)`);
      }
      if (req.headers.upgrade) checkOrigin(req, opts.corsOrigins);
      else if (UNSAFE_METHODS.has(req.method)) checkOrigin(req, opts.corsOrigins, `a ${req.method} request`);
    });
  },
  { name: 'browser-guard', fastify: '5.x', dependencies: ['errors'] },
);
