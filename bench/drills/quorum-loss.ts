// Finding 3 of issue 12: two of three members gone (killed, or frozen), the
// member the gateway prefers among them. Targets: ?serializable GET answers
// 200 within 1 s from the live member; writes and linearizable reads answer
// 503 no_leader within 2 s of the live member knowing it has no leader.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { call, Clock, sleep, summary, until, type Answer } from './lib.js';
import type { Drill, DrillContext } from './types.js';

const exec = promisify(execFile);
const OBSERVE_AFTER_MS = 5000;

/** Whether the member reports a leader (asked of that member alone). */
async function hasLeader(endpoint: string): Promise<boolean> {
  const { stdout } = await exec('etcdctl', [`--endpoints=${endpoint}`, 'endpoint', 'status', '--write-out=json'], {
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  const [s] = JSON.parse(stdout) as { Status: { leader?: number | string } }[];
  return Boolean(s?.Status.leader && String(s.Status.leader) !== '0');
}

async function quorumLoss(ctx: DrillContext, how: 'killed' | 'frozen'): Promise<void> {
  // A fresh gateway prefers member 0: it is among the lost.
  await ctx.restartGateway('SIGTERM');
  const clock = new Clock();
  const key = `${ctx.prefix}k`;
  const live = 2;
  const liveEndpoint = ctx.cluster.endpoints[live]!;
  const put = await call(ctx, clock, 'PUT', `/v1/kv/${key}`, 'before');
  if (put.status !== 201) throw new Error(`setup write: ${put.status} ${put.body}`);
  await until('the live member has the key', async () => {
    const { stdout } = await exec('etcdctl', [`--endpoints=${liveEndpoint}`, 'get', key, '--consistency=s', '--print-value-only'], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    return stdout.trim() === 'before';
  });
  for (let i = 0; i < 5; i++) await call(ctx, clock, 'GET', `/v1/kv/${key}`);

  const lostAt = clock.now();
  if (how === 'killed') await Promise.all([0, 1].map((i) => ctx.cluster.stopMember(i)));
  else await Promise.all([0, 1].map((i) => ctx.freeze(i)));
  let knewAt: number | undefined;
  const serializable: Answer[] = [];
  const writes: Answer[] = [];
  const linearizable: Answer[] = [];
  // Every 250 ms, not waiting for the previous answer: independent callers.
  const loop = (out: Answer[], method: string, path: string, body?: string) => {
    const pending: Promise<unknown>[] = [];
    let i = 0;
    const timer = setInterval(() => {
      pending.push(call(ctx, clock, method, path, body === undefined ? undefined : `${body}${i++}`).then((a) => out.push(a)));
    }, 250);
    return () => {
      clearInterval(timer);
      return Promise.all(pending);
    };
  };
  const loops = [
    loop(serializable, 'GET', `/v1/kv/${key}?serializable`),
    loop(writes, 'PUT', `/v1/kv/${key}`, 'during'),
    loop(linearizable, 'GET', `/v1/kv/${key}`),
  ];
  await until('the live member to know it has no leader', async () => !(await hasLeader(liveEndpoint)), 30_000);
  knewAt = clock.now();
  await sleep(OBSERVE_AFTER_MS);
  await Promise.all(loops.map((stop) => stop()));

  const took = (a: Answer) => a.endedAt - a.sentAt;
  ctx.log(`members 0 and 1 ${how} at ${lostAt} ms; the live member knew it had no leader at ${knewAt} ms (+${knewAt - lostAt} ms)`);
  ctx.log(`?serializable GETs: ${summary(serializable)}; slowest ${Math.max(0, ...serializable.map(took))} ms`);
  const okSer = serializable.filter((a) => a.status === 200 && a.body === 'before');
  ctx.check(
    '?serializable GET answers 200 within 1 s from the live member',
    serializable.length > 0 && okSer.length === serializable.length && serializable.every((a) => took(a) <= 1000),
    `${okSer.length} of ${serializable.length} 200 with the value; slowest ${Math.max(0, ...serializable.map(took))} ms`,
  );
  for (const [name, answers] of [['writes', writes], ['linearizable reads', linearizable]] as const) {
    const after = answers.filter((a) => a.sentAt >= knewAt!);
    const before = answers.filter((a) => a.sentAt < knewAt!);
    // From when the member knew, or from when the request was sent if later.
    const late = (a: Answer) => a.endedAt - Math.max(a.sentAt, knewAt!);
    const first503 = answers.find((a) => a.status === 503 && a.code === 'no_leader');
    ctx.log(`${name} sent before the member knew: ${summary(before)}; after: ${summary(after)}`);
    ctx.log(`${name}: first 503 no_leader at +${first503 ? first503.endedAt - knewAt! : '∞'} ms from the member knowing; slowest answer after it knew ${Math.max(0, ...after.map(late))} ms`);
    ctx.check(
      `${name} answer 503 no_leader within 2 s of the member knowing`,
      after.length > 0 && after.every((a) => a.status === 503 && a.code === 'no_leader' && late(a) <= 2000) && answers.every((a) => a.status !== 200 && a.status !== 201),
      `${after.filter((a) => a.status === 503 && a.code === 'no_leader').length} of ${after.length} 503 no_leader; slowest ${Math.max(0, ...after.map(late))} ms`,
    );
  }
}

const drills: Drill[] = [
  {
    name: 'quorum-loss',
    description: 'SIGKILL two of three members (the one the gateway prefers among them)',
    run: (ctx) => quorumLoss(ctx, 'killed'),
  },
  {
    name: 'quorum-loss-frozen',
    description: 'SIGSTOP two of three members (the one the gateway prefers among them)',
    run: (ctx) => quorumLoss(ctx, 'frozen'),
  },
];

export default drills;
