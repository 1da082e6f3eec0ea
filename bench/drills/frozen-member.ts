// Finding 1 of issue 12: SIGSTOP, for 12 s, the follower that holds the
// gateway's connection, under writes from several clients and reads. Target:
// requests sent 3 s or more after the freeze succeed; no write is applied
// twice; requests in flight at the freeze end 2xx or 504 outcome unknown.
import { call, checkWrites, Clock, longestGap, sleep, summary, type Answer } from './lib.js';
import { writeLoad } from './lib.js';
import type { Drill } from './types.js';

const FREEZE_MS = 12_000;
const SETTLE_MS = 3000;

const drill: Drill = {
  name: 'frozen-member',
  description: `SIGSTOP for ${FREEZE_MS / 1000} s the follower holding the gateway's connection, under write and read load`,
  async run(ctx) {
    // A fresh gateway connects to its first endpoint and keeps to it.
    await ctx.restartGateway('SIGTERM');
    const clock = new Clock();
    const readKey = `${ctx.prefix}read`;
    await call(ctx, clock, 'PUT', `/v1/kv/${readKey}`, 'r');
    let [target] = await ctx.connectedMembers();
    if (target === undefined) throw new Error('the gateway holds no connection to etcd');
    if (target === (await ctx.leaderIndex())) {
      // Make it a follower: hand leadership to another member.
      // "<hex id>, started, <name>, <peer urls>, <client urls>, <learner>": exact IDs (JSON's lose digits).
      const lines = (await ctx.cluster.etcdctl('member', 'list')).trim().split('\n');
      const other = lines.find((l) => !l.includes(ctx.cluster.endpoints[target!]!))!;
      await ctx.cluster.etcdctl('move-leader', other.split(',')[0]!.trim());
      [target] = await ctx.connectedMembers();
    }
    ctx.log(`freezing member ${target} (${ctx.cluster.endpoints[target!]}), leader is member ${await ctx.leaderIndex()}`);

    const load = writeLoad(ctx, clock, `${ctx.prefix}w/`);
    const reads: Answer[] = [];
    let reading = true;
    const readers = Array.from({ length: 2 }, async () => {
      while (reading) {
        reads.push(await call(ctx, clock, 'GET', `/v1/kv/${readKey}`));
        await sleep(50);
      }
    });
    await sleep(SETTLE_MS);
    const frozenAt = clock.now();
    await ctx.freeze(target!);
    await sleep(FREEZE_MS);
    ctx.thaw(target!);
    const thawedAt = clock.now();
    await sleep(SETTLE_MS);
    reading = false;
    const writes = await load.stop();
    await Promise.all(readers);

    const all: Answer[] = [...writes, ...reads];
    const inflight = all.filter((a) => a.sentAt < frozenAt && a.endedAt > frozenAt);
    const early = all.filter((a) => a.sentAt >= frozenAt && a.sentAt < frozenAt + 3000);
    const late = all.filter((a) => a.sentAt >= frozenAt + 3000 && a.sentAt < thawedAt);
    const firstOk = writes.find((w) => w.sentAt >= frozenAt && w.status < 300);
    ctx.log(`in flight at the freeze: ${summary(inflight)}`);
    ctx.log(`sent in the first 3 s of the freeze: ${summary(early)}; slowest ${Math.max(0, ...early.map((a) => a.endedAt - a.sentAt))} ms`);
    ctx.log(`sent 3 s or more into the freeze: ${summary(late)}; slowest ${Math.max(0, ...late.map((a) => a.endedAt - a.sentAt))} ms`);
    ctx.log(`first successful write sent after the freeze ended ${firstOk ? firstOk.endedAt - frozenAt : 'never'} ms after it`);
    ctx.log(`longest time without a successful write while frozen: ${longestGap(writes, frozenAt, thawedAt)} ms`);
    ctx.check(
      'requests sent 3 s or more after the freeze succeed',
      late.length > 0 && late.every((a) => a.status >= 200 && a.status < 300),
      `${late.filter((a) => a.status >= 200 && a.status < 300).length} of ${late.length} succeeded`,
    );
    // Requests sent before the gateway could tell the member hung count as in flight too.
    const atFreeze = [...inflight, ...early];
    const bad = atFreeze.filter((a) => !(a.status < 300 || (a.status === 504 && a.outcome === 'unknown')));
    ctx.check('requests in flight at the freeze (or sent in its first 3 s) end 2xx or 504 outcome unknown', bad.length === 0, summary(atFreeze));
    await checkWrites(ctx, `${ctx.prefix}w/`, writes);
  },
};

export default drill;
