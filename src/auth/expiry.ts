// Ending a stream when the token that opened it expires. A token may be
// valid for longer than setTimeout can wait (2^31 - 1 ms, 24.8 days; beyond
// that Node fires at once), so long waits are taken in steps.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Calls `fn` at `epochSeconds` (a JWT `exp`); returns the function that cancels it. */
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
  arm();
  return () => {
    canceled = true;
    clearTimeout(timer);
  };
}
