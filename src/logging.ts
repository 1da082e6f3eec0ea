// pino options for the gateway: JSON lines (pretty only on a TTY, chosen by
// the process entry), request ids, and secrets redacted before they are written.
import type { LoggerOptions } from 'pino';
import type { DestinationStream } from 'pino';

export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["sec-websocket-protocol"]',
  'req.headers["x-etcd-token"]',
  'res.headers["set-cookie"]',
  '*.password',
  '*.token',
];

// SSE tickets travel in the URL (single-use, but still credentials), and
// clients used to other gateways put tokens there too, whether or not we read them.
const URL_CREDENTIALS = /([?&](?:ticket|token|access_token)=)[^&#]*/gi;

/** The URL as logged: credential query parameters replaced with [redacted]. */
export function redactUrl(url: string): string {
  return url.replace(URL_CREDENTIALS, '$1[redacted]');
}

export interface LoggingOptions {
  level: string;
  pretty?: boolean;
  /** Where to write (tests capture logs this way). */
  stream?: DestinationStream;
}

export function loggerOptions(opts: LoggingOptions): LoggerOptions & { stream?: DestinationStream } {
  return {
    level: opts.level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: {
      // Headers are logged (they explain most client problems); redaction above
      // removes credentials from them.
      req: (req: { method: string; url: string; headers: Record<string, unknown>; ip?: string; id?: string }) => ({
        method: req.method,
        url: redactUrl(req.url),
        headers: req.headers,
        remoteAddress: req.ip,
      }),
    },
    ...(opts.pretty ? { transport: { target: 'pino-pretty' } } : {}),
    ...(opts.stream ? { stream: opts.stream } : {}),
  };
}
