// Requests a browser makes on behalf of another site. A websocket is not
// subject to CORS, and a POST with any Content-Type the /v3 protocol accepts
// (text/plain included) is a "simple" request a page may send without asking:
// with authentication off, any page a developer visits could otherwise write
// to a gateway on localhost. Browsers name the page's origin; clients that
// are not browsers send no Origin and pass. src/plugins/browser-guard.ts
// applies it to every unsafe method and websocket upgrade.
import type { FastifyRequest } from 'fastify';
import { Problem } from '../errors.js';

/** Refuses a request from a browser origin that is neither the gateway's own nor listed in CORS_ORIGINS. */
export function checkOrigin(req: FastifyRequest, allowed: string[], what = 'websocket'): void {
  const origin = req.headers.origin;
  if (!origin || allowed.includes(origin) || allowed.includes('*')) return;
  try {
    if (new URL(origin).host === req.headers.host) return;
  } catch {
    // fall through: a malformed Origin is not ours
  }
  throw new Problem(403, 'origin_not_allowed', `${what} from origin ${origin} is not allowed (CORS_ORIGINS)`);
}
