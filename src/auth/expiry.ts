// Ending a stream when the token that opened it expires. A token may be
// valid for longer than setTimeout can wait (2^31 - 1 ms, 24.8 days; beyond
// that Node fires at once), so long waits are taken in steps.
import { Problem } from '../errors.js';

const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `fn` at `epochSeconds` (a JWT `exp`); returns the function that
 * cancels it. Never calls `fn` before returning, even for a time already
 * past: a stream that ended while it was being built is the kind of
 * re-entrancy that left streams registered forever.
 */
export function atExpiry(epochSeconds: number, fn: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  let canceled = false;
  const arm = () => {
    if (canceled) return;
    const left = epochSeconds * 1000 - Date.now();
    if (left <= 0) return fn();
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  timer = setTimeout(arm, 0);
  timer.unref();
  return () => {
    canceled = true;
    clearTimeout(timer);
  };
}

/**
 * Opening a stream gets no clock-skew leeway: a token past its `exp` (still
 * good for single calls within the verifier's tolerance) would open a stream
 * that ends at once.
 */
export function refuseExpiredStream(caller: { exp: number } | undefined): void {
  if (caller && caller.exp * 1000 <= Date.now()) {
    throw new Problem(401, 'token_expired', 'the token has expired: a stream needs a token that is still valid', {
      headers: { 'www-authenticate': 'Bearer realm="etcd-gateway", error="invalid_token"' },
    });
  }
}
