// Prometheus metrics at GET /metrics: requests by route and status, their
// duration, the watch fan-out (etcd watches held, subscribers), and the
// process defaults (memory, event loop lag). A registry per app, so several
// apps in one process (the tests) do not collide.
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export default fp(
  async (app) => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: 'etcd_gateway_' });
    const requests = new Counter({
      name: 'etcd_gateway_http_requests_total',
      help: 'HTTP requests by method, route and status',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    });
    const duration = new Histogram({
      name: 'etcd_gateway_http_request_duration_seconds',
      help: 'HTTP request duration by method and route (streams count until their first byte)',
      labelNames: ['method', 'route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    new Gauge({
      name: 'etcd_gateway_etcd_watches',
      help: 'etcd watches held by this gateway (shared by all subscribers of a range)',
      registers: [registry],
      collect() {
        this.set(app.watchHub.stats().etcd_watches);
      },
    });
    new Gauge({
      name: 'etcd_gateway_watch_subscribers',
      help: 'watch subscriptions (websocket, SSE, long-poll) on this gateway',
      registers: [registry],
      collect() {
        this.set(app.watchHub.stats().subscribers);
      },
    });

    new Gauge({
      name: 'etcd_gateway_watch_buffered_bytes',
      help: 'bytes of recent watch events kept for late joiners (WATCH_BUFFER_TOTAL_BYTES at most)',
      registers: [registry],
      collect() {
        this.set(app.watchHub.stats().buffered_bytes);
      },
    });

    app.addHook('onResponse', async (req, reply) => {
      // The route pattern, never the URL: keys must not become label values.
      const route = req.routeOptions.url ?? 'unmatched';
      requests.inc({ method: req.method, route, status: String(reply.statusCode) });
      duration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
    });

    app.get(
      '/metrics',
      { schema: { tags: ['operations'], summary: 'Prometheus metrics', response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()),
    );
  },
  { name: 'metrics', fastify: '5.x', dependencies: ['watch-hub'] },
);
