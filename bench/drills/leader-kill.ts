// Leader SIGKILL under write load (issue 12's "everything that passes today
// still passes"): no acknowledged write lost, none applied twice; writes in
// flight end 2xx, 503 (never applied) or 504 outcome unknown.
import { checkWrites, Clock, longestGap, sleep, summary, writeLoad } from './lib.js';
import type { Drill } from './types.js';

const drill: Drill = {
  name: 'leader-kill',
  description: 'SIGKILL the leader under write load, restart it 5 s later',
  async run(ctx) {
    const clock = new Clock();
    const load = writeLoad(ctx, clock, `${ctx.prefix}w/`);
    await sleep(3000);
    const leader = await ctx.leaderIndex();
    const killedAt = clock.now();
    await ctx.cluster.stopMember(leader);
    ctx.log(`killed member ${leader}, the leader`);
    await sleep(5000);
    await ctx.cluster.startMember(leader);
    const restartedAt = clock.now();
    await sleep(3000);
    const writes = await load.stop();

    const inflight = writes.filter((w) => w.sentAt < killedAt && w.endedAt > killedAt);
    const failed = writes.filter((w) => w.status >= 300 || w.status === 0);
    ctx.log(`in flight at the kill: ${summary(inflight)}; slowest ${Math.max(0, ...inflight.map((w) => w.endedAt - w.sentAt))} ms`);
    ctx.log(`failed writes: ${summary(failed)}; the slowest failure took ${Math.max(0, ...failed.map((w) => w.endedAt - w.sentAt))} ms`);
    ctx.log(`longest time without a successful write: ${longestGap(writes, killedAt, restartedAt)} ms`);
    await checkWrites(ctx, `${ctx.prefix}w/`, writes);
  },
};

export default drill;
