// GET /ui: the web console, static files from ui/ at the project root (a page
// on the gateway's own /v1 API; see ui/console.js). Public like /docs: the
// page holds no data, and every call it makes authenticates as the user who
// signed in.
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync } from 'fastify';
import { fileURLToPath } from 'node:url';

/** ui/ beside src/ and dist/: the same from src/routes (tests) and dist/routes (the build). */
export const UI_ROOT = fileURLToPath(new URL('../../ui/', import.meta.url));

// Scripts, styles and connections from the gateway itself only ('self' covers
// its websocket too); no framing, so no clickjacking of the editor's buttons.
const CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const uiRoutes: FastifyPluginAsync = async (app) => {
  await app.register(fastifyStatic, {
    root: UI_ROOT,
    prefix: '/ui/',
    decorateReply: false,
    // The files change with each release: revalidate (ETag) rather than cache blindly.
    cacheControl: true,
    maxAge: 0,
    setHeaders: (res) => {
      res.header('content-security-policy', CSP);
      res.header('x-content-type-options', 'nosniff');
      res.header('referrer-policy', 'no-referrer');
    },
  });
  // The page's relative links need the trailing slash.
  app.get('/ui', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/', 301));
};

export default uiRoutes;
